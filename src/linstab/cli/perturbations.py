"""``linstab propagate``, ``figure propagation`` and ``figure projections``."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..analyses.attacks import ATTACKS, CONTROLS, SEED_MAX
from ..analyses.perturbations import (
    analyze,
    check_spectral_settings,
    read_rows,
    summary_table,
    write_summary,
)
from ..analyses.propagation import PERTURBATIONS, default_projection_units, parse_perturbations
from ..data.selection import parse_index_spec
from ..io.jsonable import dumps
from . import common
from .common import add_image_args, add_model_args, parse_dtype, parse_k


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    return v


def _radius(text: str) -> float:
    """An argparse type: an L-inf radius, a float in (0, 1] (images live in [0, 1])."""
    v = _float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a float in (0, 1], got {text!r}")
    return v


def _norm(text: str) -> float:
    """An argparse type: a finite float > 0."""
    v = _float(text)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite float > 0, got {text!r}")
    return v


def _seed(text: str) -> int:
    """An argparse type: a seed, an int in -SEED_MAX..SEED_MAX."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if abs(v) > SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer in -{SEED_MAX}..{SEED_MAX}, got {text!r}")
    return v


def _unit_spec(text: str) -> str:
    """An argparse type: a non-empty unit spec (``none`` says "no units")."""
    if not str(text).replace(",", "").strip():
        raise argparse.ArgumentTypeError(
            f"expected all, none, last, a stage number or unit addresses like 3.7,3.8, got {text!r}"
        )
    return text


def _check_classified(net, x, y, ids) -> None:
    """Refuse images the model misclassifies all of (nothing to perturb); note partial ones.

    Raises:
        ValueError: every image is misclassified (the message names them).
    """
    if y is None:
        return
    pred = net.predict(x).argmax(1).cpu()
    wrong = [i for i in range(x.shape[0]) if int(pred[i]) != int(y[i])]
    if not wrong:
        return
    shown = ", ".join(f"{ids[i]} (predicted {int(pred[i])}, label {int(y[i])})" for i in wrong[:10])
    more = f" and {len(wrong) - 10} more" if len(wrong) > 10 else ""
    if len(wrong) == x.shape[0]:
        raise ValueError(
            f"the model misclassifies every image, so there is nothing to perturb (only correctly "
            f"classified images are attacked): {shown}{more}; choose images it classifies correctly"
        )
    print(
        f"note: {len(wrong)} of {x.shape[0]} images are misclassified and skipped by every perturbation: "
        f"{shown}{more}"
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of random perturbations, PGD start (default 0)"
    )
    p.add_argument(
        "--random-ref",
        default="fgsm",
        choices=list(ATTACKS),
        help="attack whose per-image L2 norm the random perturbation copies (default fgsm)",
    )
    p.add_argument("--random-norm", type=_norm, default=None, help="fixed L2 norm (> 0) for random instead")
    p.add_argument(
        "--pgd-eps",
        type=_radius,
        default=None,
        help="fixed L-inf radius for PGD, in (0, 1] (default: minimal flipping radius, searched)",
    )
    p.add_argument(
        "--cw-steps", type=common.positive_int, default=200, help="CW Adam steps per constant (default 200)"
    )
    p.add_argument(
        "--cw-search-steps", type=common.positive_int, default=5, help="CW binary-search steps (default 5)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _attack_params(args) -> dict[str, dict]:
    prm: dict[str, dict] = {"cw": {"steps": args.cw_steps, "binary_search_steps": args.cw_search_steps}}
    if args.pgd_eps is not None:
        prm["pgd"] = {"eps": args.pgd_eps}
    return prm


def _cmd_propagate(args) -> int:
    common.check_distinct_outputs(
        {"--out": [args.out], "--summary": [args.summary], "--attacks-json": [args.attacks_json]}
    )
    net = common.network_from_args(args)
    check_spectral_settings(net, args.k, args.spectral_units, k_name="--k", units_name="--spectral-units")
    x, y, ids = common.images_from_args(args, net)
    if y is None:
        print("no labels for these images: the model's predictions are used as labels")
    _check_classified(net, x, y, ids)
    res = analyze(
        net,
        x,
        y,
        args.attack,
        ids=ids,
        dtype=parse_dtype(args.dtype),
        k=args.k,
        spectral_units=args.spectral_units,
        seed=args.seed,
        random_ref=args.random_ref,
        random_norm=args.random_norm,
        attack_params=_attack_params(args),
        progress=not args.no_progress,
    )
    for name, rr in res.attacks.items():
        for r in rr:
            if not r.success:
                print(f"{name} image {ids[r.index]}: {r.note}")
    path = res.write_csv(args.out)
    print(f"wrote {path} ({len(res.rows)} rows)")
    if not res.rows:
        print(
            f"linstab propagate: warning: no perturbation succeeded on any image, so {path} holds "
            "its header only (the reasons are listed above)",
            file=sys.stderr,
        )
    summary = res.summary()
    if args.summary:
        spath = write_summary(
            summary, args.summary, {**res.settings, "provenance": common.provenance(net, ids)}
        )
        print(f"wrote {spath}")
    if args.attacks_json:
        data = {n: [r.to_dict() for r in rr] for n, rr in res.attacks.items()}
        data["provenance"] = common.provenance(net, ids)
        Path(args.attacks_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.attacks_json).write_text(dumps(data, indent=1))
    print(summary_table(summary))
    return 0


def add_parser(sub) -> None:
    """Register ``linstab propagate``."""
    p = sub.add_parser(
        "propagate",
        help="propagated perturbations (random vs adversarial), projections, eq. (1) (paper Sec. 3.3)",
        description="Attack images, propagate clean and perturbed images through the network, and "
        "compare the growth of the propagated perturbation with linear predictions. Writes one CSV "
        "row per image x perturbation x layer and prints a per-perturbation summary.",
    )
    add_model_args(p)
    add_image_args(p, multiple=True, default="0-9")
    p.add_argument(
        "--attack",
        default="fgsm,random",
        help=f"comma list of {', '.join(PERTURBATIONS)}, or all (default fgsm,random); also the controls "
        f"{', '.join(CONTROLS)} and random:N (random noise with seed + N)",
    )
    p.add_argument(
        "--k",
        type=parse_k,
        default=64,
        help="right singular vectors per unit: an int (top-k, at most the smallest spectral unit's "
        "min(n_out, n_in); a larger k is refused) or all (dense SVD) (default 64)",
    )
    p.add_argument(
        "--spectral-units",
        type=_unit_spec,
        default="all",
        help="units with projections/eq. (1): all, none, last (last stage), a stage number, "
        "addresses like 3.7,3.8 (default all)",
    )
    p.add_argument("--out", type=common.out_file, required=True, help="CSV file of rows")
    p.add_argument(
        "--summary",
        type=common.out_file_of(".json", ".csv"),
        default=None,
        help="summary table file (.json or .csv)",
    )
    p.add_argument(
        "--attacks-json", type=common.out_file, default=None, help="write per-image attack results (JSON)"
    )
    _add_common(p)
    p.set_defaults(func=_cmd_propagate)


# options of `figure propagation` that compute the rows: ignored when they are read --from-csv
# (their parser defaults are recorded with the parser, as ``args.compute_defaults``)
_COMPUTE_FLAGS = (
    ("--model", "model"), ("--weights", "weights"), ("--input-size", "input_size"), ("--dtype", "dtype"),
    ("--seed", "seed"), ("--random-ref", "random_ref"), ("--random-norm", "random_norm"),
    ("--pgd-eps", "pgd_eps"), ("--cw-steps", "cw_steps"), ("--cw-search-steps", "cw_search_steps"),
)  # fmt: skip


def _cmd_figure_propagation(args) -> int:
    wanted = parse_perturbations(args.attack)
    if args.from_csv:
        for flag, attr in _COMPUTE_FLAGS:
            if getattr(args, attr) != args.compute_defaults[attr]:
                raise ValueError(
                    f"{flag} does not apply with --from-csv (it would be ignored: the figure is drawn from "
                    f"the rows of {args.from_csv}, computed with that run's settings)"
                )
        rows = read_rows(args.from_csv)
        if not rows:
            raise ValueError(
                f"--from-csv {args.from_csv} holds no rows (its header only: no perturbation succeeded in "
                "that run), so there is nothing to draw"
            )
        present = {int(r["image_pos"]) for r in rows}
        keep = set(parse_index_spec(args.images, max(present, default=0) + 21)) & present
        if not keep:
            raise ValueError(f"--images {args.images!r} selects none of the CSV's images {sorted(present)}")
        rows = [r for r in rows if int(r["image_pos"]) in keep]
        held = sorted({str(r["perturbation"]) for r in rows})
        missing = [n for n in wanted if n not in held]
        if missing:
            raise ValueError(
                f"--attack asks for {', '.join(missing)}, which {args.from_csv} does not hold "
                f"(it holds {', '.join(held)})"
            )
        models = sorted({str(r["model"]) for r in rows if r.get("model")})
        title = ", ".join(models) if models else Path(args.from_csv).stem
    else:
        net = common.network_from_args(args)
        x, y, ids = common.images_from_args(args, net)
        _check_classified(net, x, y, ids)
        names = ["random", *[n for n in wanted if n != "random"]]
        res = analyze(
            net,
            x,
            y,
            names,
            ids=ids,
            dtype=parse_dtype(args.dtype),
            spectral_units=None,
            seed=args.seed,
            random_ref=args.random_ref,
            random_norm=args.random_norm,
            attack_params=_attack_params(args),
            progress=not args.no_progress,
        )
        rows = res.rows
        title = net.name
    order = ["random", *[n for n in wanted if n != "random"]]
    from ..plots import save_figure  # matplotlib only for the commands that draw
    from ..plots.perturbations import propagation_figure

    fig = propagation_figure(rows, order, log=args.log, title=title)
    for path in save_figure(fig, args.out):
        print(f"wrote {path}")
    return 0


def _cmd_figure_projections(args) -> int:
    name = parse_perturbations(args.attack)
    if len(name) != 1 or name[0] not in ATTACKS:
        raise ValueError(f"--attack: expected one attack of {', '.join(ATTACKS)}, got {args.attack!r}")
    net = common.network_from_args(args)
    x, y, ids = common.images_from_args(args, net)
    stage = args.stage if args.stage is not None else len(net.stages)
    if not 1 <= stage <= len(net.stages):
        raise ValueError(f"--stage must be in 1..{len(net.stages)}, got {stage}")
    if args.units:
        try:
            idx = [int(t) for t in args.units.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"--units: expected unit numbers like 1,5,9, got {args.units!r}") from None
    else:
        idx = default_projection_units(net, stage)
        print(f"units of stage {stage} (default for {len(net.stages[stage - 1])} units per stage): {idx}")
    addrs = [net.unit(stage, i).address for i in idx]
    check_spectral_settings(net, args.k, addrs, k_name="--k", units_name="--units")
    _check_classified(net, x, y, ids)
    res = analyze(
        net,
        x,
        y,
        [name[0], "random"],
        ids=ids,
        dtype=parse_dtype(args.dtype),
        k=args.k,
        spectral_units=addrs,
        keep_alphas=addrs,
        seed=args.seed,
        random_ref=name[0],
        random_norm=args.random_norm,
        attack_params=_attack_params(args),
        progress=not args.no_progress,
    )
    from ..plots import save_figure  # matplotlib only for the commands that draw
    from ..plots.perturbations import projections_figure

    fig = projections_figure(res.rows, res.alphas, stage=stage, units=addrs, attack=name[0], title=net.name)
    for path in save_figure(fig, args.out):
        print(f"wrote {path}")
    print(summary_table(res.summary()))
    return 0


def add_figure_parser(figsub) -> None:
    """Register ``linstab figure propagation`` (Figure 3) and ``linstab figure projections`` (Figure 4)."""
    p = figsub.add_parser(
        "propagation",
        help="Figure 3: normalized propagated perturbations per unit, random (top) vs adversarial",
    )
    add_model_args(p)
    add_image_args(p, multiple=True, default="0-9")
    p.add_argument("--attack", default="fgsm", help="attack(s) for the lower rows (comma list; default fgsm)")
    p.add_argument(
        "--from-csv",
        default=None,
        help="draw from a 'linstab propagate' CSV instead of computing (--images then selects "
        "positions in that CSV, default 0-9)",
    )
    p.add_argument("--log", action="store_true", help="logarithmic y axis")
    p.add_argument("--out", type=common.out_file, required=True, help="output path (PNG and SVG are written)")
    _add_common(p)
    p.set_defaults(
        func=_cmd_figure_propagation,
        compute_defaults={attr: p.get_default(attr) for _, attr in _COMPUTE_FLAGS},
    )

    p = figsub.add_parser(
        "projections",
        help="Figure 4: propagated perturbation in a stage, predicted vs actual growth, |alpha_i| vs i",
    )
    add_model_args(p)
    add_image_args(p, multiple=True, default="0")
    p.add_argument("--attack", default="fgsm", help="the adversarial attack (default fgsm)")
    p.add_argument("--stage", type=int, default=None, help="stage (default: the last)")
    p.add_argument(
        "--units",
        default=None,
        help="unit indices in the stage for the bottom row, e.g. 6,7,8,9 (default: the paper's "
        "12,14,16,18 of 18 mapped to the stage length; ResNet-56: 6,7,8,9)",
    )
    p.add_argument(
        "--k",
        type=parse_k,
        default=None,
        help="singular vectors for the bottom row: all (dense SVD, default) or an int",
    )
    p.add_argument("--out", type=common.out_file, required=True, help="output path (PNG and SVG are written)")
    _add_common(p)
    p.set_defaults(func=_cmd_figure_projections)
