"""``linstab models``, ``info``, ``predict`` and ``jacobian-test``."""

from __future__ import annotations

import argparse

from ..analyses.taylor import jacobian_test
from ..data.images import CIFAR10_CLASSES
from ..io.jsonable import dumps
from ..models.imagenet import known_models
from ..models.registry import REGISTRY, default_model_name
from ..models.weights import resolve_weights
from ..network.view import parse_unit
from . import common
from .common import add_image_args, add_model_args, parse_dtype


def _cmd_models(args: argparse.Namespace) -> int:
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        try:
            path = resolve_weights(spec, download=False)
            where = str(path)
        except (FileNotFoundError, ValueError) as exc:
            where = "not available: " + str(exc).split(" (")[0]
        err = f"{spec.published_error:.2f}%" if spec.published_error is not None else "n/a"
        print(f"{name:<22} ResNet-{spec.depth:<4} shortcut {spec.shortcut}  error {err:>7}  {where}")
    for name in known_models():
        print(f"{name:<22} ImageNet ResNet  weights: --weights FILE (state dict); without: seeded random")
    print(f"default: {default_model_name()}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    net = common.network_from_args(args)
    print(net.describe())
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    net = common.network_from_args(args)
    x, y, ids = common.images_from_args(args, net)
    logits = net.predict(x)
    pred = logits.argmax(1)
    if y is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
        raise ValueError(
            f"labels: expected class indices in 0..{logits.shape[1] - 1} (the model's {logits.shape[1]} "
            f"outputs), got values in {int(y.min())}..{int(y.max())}"
        )
    rows = []
    for i, name in enumerate(ids):
        p = int(pred[i])
        row = {"image": name, "pred": p, "class": CIFAR10_CLASSES[p] if logits.shape[1] == 10 else str(p)}
        if y is not None:
            row["label"] = int(y[i])
            row["correct"] = bool(pred[i] == y[i])
        rows.append(row)
    if args.json:
        print(dumps(rows, indent=1))
    else:
        for r in rows:
            extra = f"  label {r['label']}  {'ok' if r['correct'] else 'WRONG'}" if "label" in r else ""
            print(f"{r['image']:<20} {r['class']:<11}{extra}")
        if y is not None:
            print(f"accuracy: {int((pred == y).sum())}/{len(ids)}")
    return 0


def _cmd_jacobian_test(args: argparse.Namespace) -> int:
    if args.beta != 20.0 and args.smooth != "softplus":
        raise ValueError("--beta is the softplus sharpness: it needs --smooth softplus (it would be ignored)")
    s, k = parse_unit(args.unit)
    net = common.network_from_args(args)
    net.unit(s, k)  # an address outside the network: refused before the images are read
    x, _, ids = common.images_from_args(args, net)
    res = jacobian_test(
        net,
        x[0],
        s,
        k,
        smooth=args.smooth,
        beta=args.beta,
        eps0=args.eps0,
        steps=args.steps,
        method=args.method,
        dtype=parse_dtype(args.dtype),
    )
    if args.json:
        print(
            dumps(
                {**res.to_dict(), "unit": args.unit, "provenance": common.provenance(net, ids[:1])}, indent=1
            )
        )
    else:
        print(res.table())
    return 0 if res.passed else 1


def add_parser(sub) -> None:
    """Register the core subcommands."""
    p = sub.add_parser("models", help="list registered models and where their weights are")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("info", help="show the units of a model")
    add_model_args(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("predict", help="classify images")
    add_model_args(p)
    add_image_args(p, multiple=True, default="all")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("jacobian-test", help="Taylor test of a unit's linearization (Appendix A)")
    add_model_args(p)
    add_image_args(p)
    p.add_argument("--unit", required=True, help="unit address STAGE.UNIT, e.g. 1.5")
    p.add_argument(
        "--smooth",
        nargs="?",
        const="softplus",
        default=None,
        choices=["softplus", "gelu"],
        help="swap the unit's ReLUs for a smooth activation (default softplus) to see order 2",
    )
    p.add_argument("--beta", type=float, default=20.0, help="softplus sharpness (default 20)")
    p.add_argument("--eps0", type=float, default=1e-1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--method", default="auto", choices=["auto", "closed", "autodiff"])
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_jacobian_test)
