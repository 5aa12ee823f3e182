"""Command line of sweeps: ``linstab sweep ...`` and ``linstab sweep summary DIR``.

``add_parser(subparsers)`` registers the ``sweep`` subcommand (with its ``summary``
subcommand) the way every linstab feature module does; :func:`main` runs it standalone
(``python -m linstab.cli.sweep sweep ...``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..linalg.results import PLATEAU, ZERO_TOL
from ..sweep.engine import Recipe, SweepWarning, plan_sweep, run_sweep
from ..sweep.summary import summarize_sweep
from . import common

__all__ = ["add_parser"]

EPILOG = """\
examples:
  linstab sweep --model resnet56-akamaster --images jpeg:0-999 --analyses bands,propagation \\
      --attack fgsm,random --out runs/sweep56
  linstab sweep ... --workers 2                    (a LocalCluster of 2 single-thread workers)
  linstab sweep ... --scheduler tcp://host:8786    (an existing Dask cluster, or a scheduler file)
  linstab sweep ... --workers 0                    (a plain loop in this process, no Dask)
  linstab sweep summary runs/sweep56 --out runs/sweep56-figures

Run the same command again to resume: finished tasks are skipped.
"""


RESUME_HINT = "sweep interrupted: run the same command again to resume (finished tasks are kept)"


def _show_sweep_warnings(show):
    """A ``warnings.showwarning`` that prints a :class:`SweepWarning` (something the run repaired,
    e.g. an unreadable task file moved aside) as one line, without a source line; others as
    ``show`` does.
    """

    def _show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SweepWarning):
            print(f"linstab sweep: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return _show


def _cmd_sweep(args: argparse.Namespace) -> int:

    if not args.model:
        raise ValueError("--model is required (repeat it for several models)")
    if not args.out:
        raise ValueError("--out DIR is required")
    try:
        params = json.loads(args.attack_params) if args.attack_params else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--attack-params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError('--attack-params must be a JSON object, e.g. {"pgd": {"steps": 10}}')
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("give --workers or --scheduler, not both")
    recipe = Recipe(
        analyses=tuple(args.analyses.split(",")),
        attacks=tuple(a.strip() for a in args.attack.split(",") if a.strip()),
        units=args.units,
        k=args.k,
        thresholds=tuple(args.thresholds),
        zero_tol=args.zero_tol,
        dtype=args.dtype,
        seed=args.seed,
        attack_params=params,
        exact_ones=args.exact_ones,
    )
    # everything is validated here, before any directory or cluster exists
    plan = plan_sweep(args.model, args.images, recipe, check_weights=not args.no_weights_check)
    src = plan.images.source
    n_units = ", ".join(f"{m}: {len(u)} units" for m, u in plan.units.items())
    print(
        f"sweep: {len(plan.tasks)} tasks = {len(plan.models)} model(s) x {len(plan.images.refs)} images "
        f"({src.name}{', LOSSY JPEG' if src.lossy else ''}); {n_units}; analyses {','.join(recipe.analyses)}",
        file=sys.stderr,
    )
    argv = getattr(args, "_argv", None) or sys.argv
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_sweep_warnings(warnings.showwarning)
            res = run_sweep(
                args.out,
                plan,
                workers=args.workers,
                scheduler=args.scheduler,
                threads=args.threads,
                progress=not args.no_progress,
                retry_errors=args.retry_errors,
                argv=list(argv),
            )
    except KeyboardInterrupt:
        print(RESUME_HINT, file=sys.stderr)
        return 130
    except SystemExit:  # SIGTERM (`kill PID`, a batch system's time limit): linstab.cli.main
        print(RESUME_HINT, file=sys.stderr)
        raise
    print(
        f"sweep: {res.ran} tasks run, {res.done_before} already done, {res.errors} with errors, "
        f"{res.seconds:.1f} s -> {res.out}",
        file=sys.stderr,
    )
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:

    if args.resamples < 1:
        raise ValueError(f"--resamples must be >= 1, got {args.resamples}")
    text, _, paths = summarize_sweep(
        args.dir,
        figures=args.out,
        json_path=args.json,
        n_resamples=args.resamples,
        confidence=args.confidence,
        seed=args.seed,
    )
    print(text)
    for p in paths:
        print(f"figure: {p}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    """Register ``sweep`` (and ``sweep summary``) on ``linstab``'s subparsers."""
    p = sub.add_parser(
        "sweep",
        help="per-image analyses over many images on Dask (resumable, Parquet); 'sweep summary DIR'",
        description="Run bands / top-k / propagation analyses for every (model, image) as one task "
        "on Dask distributed; results go to a Parquet dataset under --out, written per task.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="registered model name, FILE.safetensors trained by linstab or a factory "
        "'module:function'; repeat for several",
    )
    p.add_argument(
        "--images",
        default="all",
        help="0-19 / all (the 20 lossless defaults), jpeg:0-9999 (the lossy JPEG test set, "
        "$LINSTAB_CIFAR10_JPEG), or PATH[:SPEC] (folder, image file, .npy/.npz) (default: all)",
    )
    p.add_argument(
        "--analyses", default="bands", help="comma list of bands, topk, propagation (default: bands)"
    )
    p.add_argument(
        "--attack",
        default="fgsm,random",
        help="perturbations for propagation: fgsm, pgd, deepfool, cw, random, all (default: fgsm,random)",
    )
    p.add_argument("--attack-params", default=None, help='per-attack JSON, e.g. {"pgd": {"steps": 10}}')
    p.add_argument("--units", default="all", help="units: all, last, a stage (3), addresses (1.1,3.9)")
    p.add_argument("--k", type=int, default=16, help="top-k singular values per unit (default 16)")
    p.add_argument(
        "--thresholds",
        type=float,
        nargs=2,
        default=PLATEAU,
        metavar=("LO", "HI"),
        help=f"plateau band (default {PLATEAU[0]:g} {PLATEAU[1]:g})",
    )
    p.add_argument(
        "--zero-tol", type=float, default=ZERO_TOL, help=f"values <= it count as zero (default {ZERO_TOL:g})"
    )
    p.add_argument(
        "--exact-ones",
        action="store_true",
        help="bands: also count the values exactly 1 of units where that needs the whole spectrum (slow)",
    )
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=common.out_dir, default=None, help="sweep directory (created; reused to resume)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local Dask workers, one thread each (default: one per core; 0: a loop in this process)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="existing cluster: scheduler address tcp://host:8786 or a scheduler file",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per task (default 1)")
    p.add_argument("--retry-errors", action="store_true", help="rerun tasks recorded with errors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-weights-check",
        action="store_true",
        help="do not look for the weights on this machine (the workers have them; registry SHA-256 used)",
    )
    p.set_defaults(func=_cmd_sweep)

    ssub = p.add_subparsers(dest="sweep_command", metavar="summary")
    s = ssub.add_parser(
        "summary",
        help="per-unit statistics with bootstrap CIs over images, and figures",
        description="Per-unit statistics of a sweep with 95%% percentile bootstrap CIs over images "
        "(seeded); figures (Figure 2 band fractions with CI bands, jump-ratio and attack-radius "
        "distributions, correlation with the margin) as PNG + SVG under --out.",
    )
    s.add_argument("dir", help="the sweep directory")
    s.add_argument(
        "--out", type=common.out_dir, default=None, help="folder for the figures (default: no figures)"
    )
    s.add_argument(
        "--json", type=common.out_file, default=None, help="also write the statistics as JSON to this file"
    )
    s.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples (default 9999)")
    s.add_argument("--confidence", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    s.set_defaults(func=_cmd_summary)
