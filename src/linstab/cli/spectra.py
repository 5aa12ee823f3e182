"""``linstab spectrum``, ``bands``, ``figure scree`` and ``figure bands``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..analyses.network_spectra import scree_data, unit_bands, write_bands_csv
from ..io.jsonable import dumps
from ..linalg.band_estimates import estimate_bands
from ..linalg.results import METHODS, PLATEAU, SOLVERS, ZERO_TOL
from ..linalg.slq import slq
from ..network.view import parse_unit
from ..plots.spectra import plot_bands, plot_scree
from ..spectra.spectrum import spectrum
from . import common
from .common import add_image_args, add_model_args, parse_dtype

ESTIMATES = ("density", "bands-estimate")


_ESTIMATE_FLAGS = (("--probes", "probes", None), ("--steps", "steps", None), ("--accuracy", "accuracy", None),
                   ("--seed", "seed", 0))  # fmt: skip
_BAND_FLAGS = (("--thresholds", "thresholds", [0.99, 1.01]), ("--zero-tol", "zero_tol", 1e-6))
_VALUE_FLAGS = (("--k", "k", None), ("--vectors", "vectors", False))
_SOLVER_FLAGS = (("--solver", "solver", "auto"), ("--max-iter", "max_iter", None))


def _refuse_unused(args: argparse.Namespace, flags, what: str) -> None:
    """A ValueError for the first of ``flags`` (``(flag, attribute, default)``) given a value
    although it does not apply to ``what`` (it would be ignored).
    """
    for flag, attr, default in flags:
        if getattr(args, attr, default) != default:
            raise ValueError(f"{flag} does not apply to {what} (it would be ignored)")


def _cmd_spectrum(args: argparse.Namespace) -> int:
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    what = f"--method {args.method}"
    if args.method not in ESTIMATES:
        _refuse_unused(args, _ESTIMATE_FLAGS + _BAND_FLAGS, what)
    else:
        _refuse_unused(args, _VALUE_FLAGS + _SOLVER_FLAGS, what)
        if args.method == "density":
            _refuse_unused(args, _BAND_FLAGS, what)
    if args.method == "exact":
        _refuse_unused(args, _SOLVER_FLAGS, what)
    suffix = Path(args.out).suffix.lower()
    if args.method in ESTIMATES:
        if suffix not in ("", ".json", ".npz"):
            raise ValueError(f"--out: --method {args.method} writes .json or .npz, got {args.out!r}")
    elif suffix not in ("", ".npz"):
        raise ValueError(
            f"--out: --method {args.method} writes .npz (values, vectors, metadata), got {args.out!r}; "
            "the matrix-free estimates (--method density/bands-estimate) also write .json"
        )
    address = parse_unit(args.unit) if args.unit is not None else None
    net = common.network_from_args(args)
    if address is not None:
        net.unit(*address)  # an address outside the network: refused before the forward pass
    elif args.stage is not None:
        net.unit(args.stage, 1)  # a stage outside the network: refused the same way
    x, _, ids = common.images_from_args(args, net)
    dtype = parse_dtype(args.dtype)
    lin = net.linearize(x[0], dtype=dtype)
    if address is not None:
        op = lin.unit(*address)
        what = f"unit {args.unit}"
    elif args.stage is not None:
        op = lin.stage(args.stage)
        what = f"stage {args.stage}"
    else:
        op = lin.network()
        what = "network"
    if args.method in ESTIMATES:
        return _estimate(args, net, ids[0], what, op)
    kwargs = {"vectors": args.vectors}
    if args.method == "exact":
        kwargs.update(k=args.k, dtype=dtype, progress=not args.no_progress)
    else:
        kwargs.update(k=args.k or 32, solver=args.solver, max_iter=args.max_iter)
    res = spectrum(op, args.method, **kwargs)
    path = res.save(
        args.out,
        extra={
            **common.provenance(net, ids[:1]),
            "image": ids[0],
            "component": what,
            "n_out": op.shape[0],
            "n_in": op.shape[1],
        },
    )
    v = res.values
    print(
        f"{net.name} {ids[0]} {what}: {v.numel()} singular values ({res.method}, {res.route}, "
        f"{res.timings.get('total', 0):.2f} s)"
    )
    print(
        f"  largest {float(v[0]):.6g}, smallest {float(v[-1]):.6g}"
        + (f", exactly |alpha|: {res.n_exact_ones}" if res.n_exact_ones is not None else "")
        + (
            f", exactly |alpha|: at least {res.info['n_exact_ones_at_least']} (the count: linstab bands)"
            if res.n_exact_ones is None and (res.info or {}).get("n_exact_ones_at_least") is not None
            else ""
        )
        + (f", structural zeros: {res.n_zero_structural}" if res.n_zero_structural is not None else "")
    )
    if res.residuals is not None:
        print(f"  max residual {float(res.residuals.max()):.3g}, converged {res.converged}")
    print(f"wrote {path}")
    return 0 if res.converged else 1


def _estimate_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of the matrix-free estimators from ``--probes/--steps/--accuracy/--seed``."""
    for name in ("probes", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be a positive integer, got {v}")
    if args.accuracy is not None and not 0 < args.accuracy < 1:
        raise ValueError(f"--accuracy must be a fraction of n in (0, 1), got {args.accuracy}")
    return {"n_probes": args.probes, "steps": args.steps, "accuracy": args.accuracy, "seed": args.seed}


def _estimate(args: argparse.Namespace, net, image_id: str, what: str, op) -> int:
    """``spectrum --method density|bands-estimate``: matrix-free, written as JSON or NPZ."""
    opts = _estimate_options(args)
    meta = {
        **common.provenance(net, [image_id]),
        "image": image_id,
        "component": what,
        "n_out": op.shape[0],
        "n_in": op.shape[1],
    }
    if args.method == "density":
        res = slq(op, **opts)
        data = res.to_dict()
        line = (
            f"SLQ density from {res.n_probes} probes x {res.lanczos_steps} Lanczos steps "
            f"({res.timings.get('total', 0):.1f} s)"
        )
    else:
        res = estimate_bands(op, tuple(args.thresholds), args.zero_tol, **opts)
        data = res.to_dict()
        bands_txt = ", ".join(
            f"{b} {res.band(b).estimate:.0f} [{res.band(b).lower:.0f}, {res.band(b).upper:.0f}]"
            for b in ("above", "plateau", "below", "zero")
        )
        line = f"band estimates ({res.confidence:.0%} intervals, {res.n_probes} probes): {bands_txt}"
    data = {"estimate": args.method, **meta, **data}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(dumps(data, indent=1))
    else:
        path = path if path.suffix.lower() == ".npz" else path.with_name(path.name + ".npz")
        arrays = {k: np.asarray(v) for k, v in data.items() if isinstance(v, list) and k != "thresholds"}
        with open(path, "wb") as f:  # a file object: NumPy would append ".npz" to "x.NPZ"
            np.savez(f, metadata=np.array(dumps(data)), **arrays)
    print(f"{net.name} {image_id} {what} (n = {min(op.shape)}, estimated, not exact): {line}")
    print(f"wrote {path}")
    return 0


def _band_rows(
    args: argparse.Namespace, net, image, image_id: str, estimate: dict | None = None
) -> list[dict]:
    """Band counts of every unit of ``net`` at one image, each row saying whose counts they are."""
    rows = unit_bands(
        net,
        image,
        tuple(args.thresholds),
        args.zero_tol,
        dtype=parse_dtype(args.dtype),
        progress=not args.no_progress,
        estimate=estimate,
    )
    for row in rows:
        row["image"], row["weights_sha256"] = image_id, net.sha256
    return rows


def _cmd_bands(args: argparse.Namespace) -> int:
    if not args.estimate:
        _refuse_unused(args, _ESTIMATE_FLAGS, "exact counts (without --estimate)")
    if Path(args.out).suffix.lower() not in ("", ".csv"):
        raise ValueError(f"--out: linstab bands writes CSV (.csv), got {args.out!r}")
    net = common.network_from_args(args)
    x, _, ids = common.images_from_args(args, net)
    rows = _band_rows(args, net, x[0], ids[0], _estimate_options(args) if args.estimate else None)
    path = write_bands_csv(rows, args.out if Path(args.out).suffix else args.out + ".csv")
    total = sum(r["seconds"] for r in rows)
    kind = "estimated (matrix-free, with confidence intervals)" if args.estimate else "exact"
    print(f"{net.name} {ids[0]}: {kind} counts of {len(rows)} units in {total:.1f} s; wrote {path}")
    return 0


def _cmd_figure_scree(args: argparse.Namespace) -> int:
    x, _, ids = common.images_from_args(args)
    data = []
    for net in common.networks_from_args(args):
        data.append(
            scree_data(
                net,
                x,
                unit_index=args.unit_index,
                stages=not args.no_stages,
                dtype=parse_dtype(args.dtype),
                stage_method=args.stage_method,
                stage_k=args.stage_k,
                max_dense=args.max_dense,
                image_ids=ids,
                progress=not args.no_progress,
            )
        )
    paths = plot_scree(data, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_figure_bands(args: argparse.Namespace) -> int:
    from ..plots import figure_paths

    common.check_distinct_outputs({"--csv": [args.csv], "--out": figure_paths(args.out)})
    x, _, ids = common.images_from_args(args)
    rows = []
    for net in common.networks_from_args(args):
        rows.extend(_band_rows(args, net, x[0], ids[0]))
    if args.csv:
        write_bands_csv(rows, args.csv)
    paths = plot_bands(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _add_band_args(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    p.add_argument(
        "--thresholds",
        nargs=2,
        type=float,
        default=list(PLATEAU),
        metavar=("LO", "HI"),
        help=f"plateau band [LO, HI] (default {PLATEAU[0]:g} {PLATEAU[1]:g})",
    )
    p.add_argument(
        "--zero-tol", type=float, default=ZERO_TOL, help=f"values <= this count as 0 (default {ZERO_TOL:g})"
    )
    if not dtype:
        return
    p.add_argument(
        "--dtype",
        default="float64",
        choices=["float32", "float64"],
        help="linearization dtype (counts are always computed in float64)",
    )


def _add_estimate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--probes", type=int, default=None, help="estimates: random probes (default: from --accuracy)"
    )
    p.add_argument("--steps", type=int, default=None, help="estimates: Lanczos steps (default: automatic)")
    p.add_argument(
        "--accuracy", type=float, default=None, help="estimates: target half-width as a fraction of n (0.01)"
    )
    p.add_argument("--seed", type=int, default=0, help="estimates: seed of the probes")


def add_parser(sub) -> None:
    """Register ``linstab spectrum`` and ``linstab bands``."""
    p = sub.add_parser("spectrum", help="singular values of a unit, stage or network Jacobian")
    add_model_args(p)
    add_image_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", help="unit address STAGE.UNIT, e.g. 1.5")
    which.add_argument("--stage", type=int, help="stage number (1-based)")
    which.add_argument("--network", action="store_true", help="the whole chain of units")
    p.add_argument(
        "--method",
        default="exact",
        choices=[*METHODS, *ESTIMATES],
        help="exact/topk/bottomk singular values, or matrix-free estimates: density (SLQ) or "
        "bands-estimate (band counts with confidence intervals)",
    )
    p.add_argument("--k", type=int, default=None, help="number of values for topk/bottomk (default 32)")
    p.add_argument("--vectors", action="store_true", help="also store singular vectors u, v")
    p.add_argument("--solver", default="auto", choices=list(SOLVERS), help="iterative solver")
    p.add_argument("--max-iter", type=int, default=None, help="iteration limit of the iterative solver")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    _add_band_args(p, dtype=False)
    _add_estimate_args(p)
    p.add_argument(
        "--out",
        type=common.out_file,
        required=True,
        help="output .npz (singular_values, u, v, metadata JSON; appended when the name has no "
        "suffix); estimates: .json or .npz",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_spectrum)

    p = sub.add_parser("bands", help="band counts of every unit (paper Figure 2) as CSV")
    add_model_args(p)
    add_image_args(p)
    _add_band_args(p)
    p.add_argument(
        "--estimate",
        action="store_true",
        help="estimate the counts matrix-free with confidence intervals (units too large for exact counts)",
    )
    _add_estimate_args(p)
    p.add_argument("--out", type=common.out_file, required=True, help="output .csv (appended to a bare name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_bands)


def add_figure_parser(figsub) -> None:
    """Register ``linstab figure scree`` (Figure 1) and ``linstab figure bands`` (Figure 2)."""

    def models(p):
        p.add_argument(
            "--model",
            action="append",
            default=None,
            help="registered model; repeat for side-by-side columns (default: the default model)",
        )
        p.add_argument("--weights", action="append", default=None, help="weights file per --model")

    p = figsub.add_parser("scree", help="Figure 1: scree plots of unit and stage spectra")
    models(p)
    add_image_args(p, multiple=True, default="0-4")
    p.add_argument("--unit-index", type=int, default=5, help="unit of each stage for the top row (default 5)")
    p.add_argument("--no-stages", action="store_true", help="skip the stage spectra (bottom row)")
    p.add_argument(
        "--stage-method",
        default="auto",
        choices=["auto", "exact", "topk"],
        help="stage spectra: exact, top-k, or auto (exact up to --max-dense)",
    )
    p.add_argument("--stage-k", type=int, default=256, help="values per stage with topk (default 256)")
    p.add_argument("--max-dense", type=int, default=8192, help="largest dense stage for auto (default 8192)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", type=common.out_file, required=True, help="output path (PNG and SVG are written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_figure_scree)

    p = figsub.add_parser("bands", help="Figure 2: fractions of singular values per band and unit")
    models(p)
    add_image_args(p)
    _add_band_args(p)
    p.add_argument("--csv", type=common.out_file, default=None, help="also write the counts as CSV")
    p.add_argument("--out", type=common.out_file, required=True, help="output path (PNG and SVG are written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_figure_bands)
