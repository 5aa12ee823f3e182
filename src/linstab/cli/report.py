"""``linstab report``."""

from __future__ import annotations

from pathlib import Path

from ..data.selection import parse_index_spec
from ..models.registry import default_model_name
from ..report.build import build_report
from ..report.context import SECTIONS, ReportConfig


def _cmd_report(args) -> int:
    models = args.model or [default_model_name()]
    n_img = 5 if args.quick else 10
    images = parse_index_spec(args.images, 20) if args.images else list(range(n_img))
    attacks = (
        tuple(a.strip() for a in args.attacks.split(","))
        if args.attacks
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
    )
    sections = tuple(s.strip() for s in args.sections.split(",")) if args.sections else SECTIONS
    path = build_report(cfg, sections)
    print(f"report written to {path}")
    return 0


def add_parser(sub) -> None:
    """Register ``linstab report``."""
    p = sub.add_parser("report", help="reproduce the whole paper for a model (HTML, data, figures)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="registered model; give twice for two models side by side (default: the default model)",
    )
    p.add_argument("--images", default=None, help="default-image indices (default: 0-9, quick: 0-4)")
    p.add_argument("--out", default="linstab-report", help="output folder (default: linstab-report)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer images, top-k for stages, FGSM and PGD only (a few minutes on 2 CPU cores)",
    )
    p.add_argument("--attacks", default=None, help="comma list of attacks (default: all; quick: fgsm,pgd)")
    p.add_argument("--sections", default=None, help=f"comma list of sections (default: all of {SECTIONS})")
    p.add_argument(
        "--cache-dir", default=None, help="cache location (default: $LINSTAB_CACHE_DIR or ~/.cache/linstab)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_report)
