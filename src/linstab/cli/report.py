"""``linstab report``."""

from __future__ import annotations

import sys
from pathlib import Path

from ..io.jsonable import dumps
from ..io.profile import profile_summary, profiling
from ..models.registry import SHORTCUT_REFERENCE, default_report_models
from ..report.build import build_report
from ..report.context import EXACT_REPORT_MAX, SECTIONS, ReportConfig
from . import common


def _cmd_report(args) -> int:
    models = args.model or default_report_models()
    images = args.images or ("0-4" if args.quick else "0-19")
    attacks = (
        tuple(a.strip() for a in args.attacks.split(","))
        if args.attacks is not None  # an empty value names no attack: refused by ReportConfig
        else (("fgsm", "pgd") if args.quick else ("fgsm", "pgd", "deepfool", "cw"))
    )
    cfg = ReportConfig(
        models=models,
        images=images,
        quick=args.quick,
        attacks=attacks,
        out=Path(args.out),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        use_cache=not args.no_cache,
        seed=args.seed,
        progress=not args.no_progress,
        sweep_dir=Path(args.sweep_dir) if args.sweep_dir else None,
        seeds=args.seeds,
        device=args.device,
        workers=args.workers,
        weights=args.weights,
        input_size=args.input_size,
        exact_max=args.exact_max,
        shortcut_reference=None if args.no_shortcut_reference else args.shortcut_reference,
    )
    sections = tuple(s.strip() for s in args.sections.split(",")) if args.sections else SECTIONS
    try:
        if args.profile:
            with profiling() as prof:
                path = build_report(cfg, sections)
            summary = {"command": getattr(args, "_argv", None), **profile_summary(prof)}
            summary["records"] = prof.to_dict()["records"]
            out = Path(args.profile)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(dumps(summary, indent=1, default=str))
            print(f"profile written to {out}")
        else:
            path = build_report(cfg, sections)
    except KeyboardInterrupt:  # Ctrl-C: no traceback; the work done so far is in the cache
        cached = "" if args.no_cache else "; the results computed so far are cached: run it again to resume"
        print(f"linstab report: interrupted, no report written{cached}", file=sys.stderr)
        return 130
    print(f"report written to {path}")
    return 0


def add_parser(sub) -> None:
    """Register ``linstab report``."""
    p = sub.add_parser("report", help="reproduce the whole paper for a model (HTML, data, figures)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="registered model, FILE.safetensors trained by linstab or a factory 'module:function'; "
        "give twice for two models side by side (default: the default model; "
        "resnet56-linstab and resnet110-linstab side by side once both ship)",
    )
    p.add_argument(
        "--images",
        default=None,
        help="images: default-image indices (0-19, 0,3,7), jpeg:INDICES for the lossy JPEG test set "
        "(labelled lossy), or a path (default: all 20 lossless images; quick: 0-4)",
    )
    p.add_argument(
        "--sweep-dir",
        default=None,
        help="a 'linstab sweep' output folder: Figure 2's per-unit band fractions and trends over all its "
        "images come from its Parquet rows (see docs/findings.md)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="repeats of every random quantity (random noise, interpolation noise; default 3, quick 2)",
    )
    p.add_argument(
        "--weights",
        action="append",
        default=None,
        help="explicit weights file for a --model (give one per --model, in the same order)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="ImageNet networks (torchvision:...): image size (default 224); image files are resized",
    )
    p.add_argument(
        "--exact-max",
        type=int,
        default=EXACT_REPORT_MAX,
        metavar="N",
        help=f"units with more output values get estimates (top-k values, band counts with 95%% intervals) "
        f"instead of exact spectra (default {EXACT_REPORT_MAX}; ImageNet networks at 224 exceed it)",
    )
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--shortcut-reference",
        default="auto",
        metavar="M",
        help="a model whose down-sampling units are shown beside the report's in Figure 1 and tested for "
        f"the down-sampling finding (default auto: {SHORTCUT_REFERENCE}, option A, for option-B models "
        "when its weights are on this machine)",
    )
    ref.add_argument(
        "--no-shortcut-reference",
        action="store_true",
        help="no shortcut reference (see --shortcut-reference)",
    )
    p.add_argument(
        "--out", type=common.out_dir, default="linstab-report", help="output folder (default: linstab-report)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer images, top-k for stages, FGSM and PGD only (a few minutes on 2 CPU cores)",
    )
    p.add_argument("--attacks", default=None, help="comma list of attacks (default: all; quick: fgsm,pgd)")
    p.add_argument("--sections", default=None, help=f"comma list of sections (default: all of {SECTIONS})")
    p.add_argument(
        "--cache-dir",
        type=common.out_dir,
        default=None,
        help="cache location (default: $LINSTAB_CACHE_DIR or ~/.cache/linstab)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    p.add_argument(
        "--profile",
        type=common.out_file,
        default=None,
        metavar="FILE",
        help="write a JSON profile: seconds per section, figure, panel, route and attack",
    )
    p.add_argument(
        "--device",
        default=None,
        help="where the models run: cpu (default), cuda or cuda:N (refused when not available here)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for per-image spectra and band counts, one thread each, plus one for the attacks "
        "beside them (default: one per CPU; 1: this process only)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_report)
