"""The ``linstab`` command line.

Subcommands are contributed by feature modules: each module listed in ``COMMAND_MODULES``
defines ``add_parser(subparsers)`` that registers its subcommands and sets ``func`` (a handler
taking the parsed namespace and returning an exit code). Shared options live here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

__all__ = [
    "main",
    "build_parser",
    "add_model_args",
    "add_image_args",
    "network_from_args",
    "images_from_args",
    "parse_index_spec",
    "default_model_name",
]

# feature modules that contribute subcommands: each defines add_parser(subparsers) and may
# define add_figure_parser(figure_subparsers) for kinds of `linstab figure KIND`
COMMAND_MODULES: tuple[str, ...] = (
    "linstab.cli",
    "linstab.training",
    "linstab.perturbations",
    "linstab.spectra",
    "linstab.report",
)


# --------------------------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------------------------
def default_model_name() -> str:
    """The default model: the best embedded linstab model, else ``resnet56-akamaster``."""
    from .models import REGISTRY

    own = [s for s in REGISTRY.values() if s.source == "linstab" and s.package_data]
    if own:
        own.sort(key=lambda s: (s.published_error if s.published_error is not None else 1e9, -s.depth))
        return own[0].name
    return "resnet56-akamaster"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model NAME`` and ``--weights PATH``."""
    p.add_argument(
        "--model",
        default=None,
        help="registered model name (see 'linstab models'); default: the best embedded model, "
        "else resnet56-akamaster",
    )
    p.add_argument("--weights", default=None, help="explicit weights file for --model")


def network_from_args(args: argparse.Namespace):
    """Load the :class:`~linstab.network.Network` named by ``--model``/``--weights``."""
    from .network import load_model

    return load_model(args.model or default_model_name(), weights=args.weights)


def parse_index_spec(spec: str, n: int) -> list[int]:
    """Parse ``"3"``, ``"0-9"``, ``"0,2,5-7"`` or ``"all"`` into indices in ``0..n-1``.

    Raises:
        ValueError: for malformed specs or indices out of range.
    """
    text = str(spec).strip()
    if text == "all":
        return list(range(n))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()) or int(a) > int(b):
                raise ValueError(f"bad index range {part!r} in {spec!r}")
            out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"bad index {part!r} in {spec!r}: expected e.g. 0, 0-9, 0,2,5-7 or all")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices {bad} out of range 0..{n - 1}")
    return out


def add_image_args(p: argparse.ArgumentParser, multiple: bool = False, default: str = "0") -> None:
    """``--image I`` (one) or ``--images SPEC`` (several): default-image indices or a path."""
    if multiple:
        p.add_argument(
            "--images",
            default=default,
            help="default-image indices (e.g. 0-9, 0,3,7, all) or a path to PNG/JPEG files, "
            f"a folder, .npy or .npz (default: {default})",
        )
    else:
        p.add_argument(
            "--image",
            default=default,
            help=f"default-image index 0..19 or an image file (default: {default})",
        )


def images_from_args(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Images selected by ``--image``/``--images``.

    Returns:
        ``(images, labels, ids)``: ``(N, 3, H, W)`` in [0, 1], labels (``None`` for user
        files) and a readable id per image.
    """
    from .data import default_images, load_images

    spec = getattr(args, "images", None)
    if spec is None:
        spec = getattr(args, "image", "0")
    spec = str(spec)
    looks_like_indices = all(c.isdigit() or c in ",- " for c in spec) or spec == "all"
    if looks_like_indices and not Path(spec).exists():
        idx = parse_index_spec(spec, 20)
        if getattr(args, "image", None) is not None and getattr(args, "images", None) is None:
            if len(idx) != 1:
                raise ValueError(f"--image takes one image, got {spec!r}")
        x, y = default_images(idx)
        return x, y, [f"cifar10-test-{i}" for i in idx]
    x = load_images(spec)
    if getattr(args, "images", None) is None and x.shape[0] != 1:
        raise ValueError(f"--image takes one image, {spec} holds {x.shape[0]}")
    return x, None, [f"{Path(spec).name}[{i}]" for i in range(x.shape[0])]


def parse_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype must be float32 or float64, got {name!r}")
    return table[name]


# --------------------------------------------------------------------------------------------
# core subcommands
# --------------------------------------------------------------------------------------------
def _cmd_models(args: argparse.Namespace) -> int:
    from .models import REGISTRY, resolve_weights

    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        try:
            path = resolve_weights(spec, download=False)
            where = str(path)
        except (FileNotFoundError, ValueError) as exc:
            where = "not available: " + str(exc).split(" (")[0]
        err = f"{spec.published_error:.2f}%" if spec.published_error is not None else "n/a"
        print(f"{name:<22} ResNet-{spec.depth:<4} shortcut {spec.shortcut}  error {err:>7}  {where}")
    print(f"default: {default_model_name()}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    net = network_from_args(args)
    print(net.describe())
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .data import CIFAR10_CLASSES

    net = network_from_args(args)
    x, y, ids = images_from_args(args)
    logits = net.predict(x)
    pred = logits.argmax(1)
    rows = []
    for i, name in enumerate(ids):
        row = {"image": name, "pred": int(pred[i]), "class": CIFAR10_CLASSES[int(pred[i])]}
        if y is not None:
            row["label"] = int(y[i])
            row["correct"] = bool(pred[i] == y[i])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            extra = f"  label {r['label']}  {'ok' if r['correct'] else 'WRONG'}" if "label" in r else ""
            print(f"{r['image']:<20} {r['class']:<11}{extra}")
        if y is not None:
            print(f"accuracy: {int((pred == y).sum())}/{len(ids)}")
    return 0


def _cmd_jacobian_test(args: argparse.Namespace) -> int:
    from .checks import jacobian_test
    from .network import parse_unit

    net = network_from_args(args)
    x, _, _ = images_from_args(args)
    s, k = parse_unit(args.unit)
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
    print(json.dumps(res.to_dict(), indent=1) if args.json else res.table())
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


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linstab",
        description="Stability analysis of pre-trained residual networks by linearization.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"linstab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fig = sub.add_parser("figure", help="draw one of the paper's figures (PNG and SVG)")
    figsub = fig.add_subparsers(dest="figure", metavar="FIGURE")
    for modname in COMMAND_MODULES:
        mod = importlib.import_module(modname)
        mod.add_parser(sub)
        if hasattr(mod, "add_figure_parser"):
            mod.add_figure_parser(figsub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linstab`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"linstab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
