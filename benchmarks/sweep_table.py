"""Markdown table of per-unit band fractions from ``linstab sweep summary --json`` files.

Usage::

    python benchmarks/sweep_table.py runs/sweep56-lossless-summary.json runs/sweep56-jpeg-summary.json \
        [--units 1.1,1.5,...] [--model resnet56-akamaster]

One column group per summary (its image source and count in the header, "lossy" where the
images are), one row per unit: mean fraction over the images with its 95% bootstrap interval,
for the bands "plateau" ([0.99, 1.01]), "above" (> 1.01) and "zero".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BANDS = (("frac_plateau", "plateau"), ("frac_above", "> 1.01"), ("frac_zero", "zero"))


def _source(summary: dict, model: str) -> str:
    src = summary["manifest"]["image_source"]
    n = summary["models"][model]["images"]
    return f"{n} {src['name']}" + (" (lossy)" if src.get("lossy") else "")


def table(paths: list[Path], units: list[str] | None, model: str | None) -> str:
    """The Markdown table (see the module docstring)."""
    sums = [json.loads(Path(p).read_text()) for p in paths]
    model = model or next(iter(sums[0]["models"]))
    stats = []
    for s in sums:
        if model not in s["models"]:
            raise ValueError(f"model {model!r} is not in {s['directory']}: {sorted(s['models'])}")
        stats.append(
            {(r["unit"], r["statistic"]): r for r in s["models"][model]["stats"] if r["analysis"] == "bands"}
        )
    all_units = list(dict.fromkeys(u for (u, _), _r in stats[0].items()))
    units = units or all_units
    missing = [u for u in units if u not in all_units]
    if missing:
        raise ValueError(f"units {missing} not in the summary; it has {all_units}")
    head = ["unit"] + [f"{label}, {_source(s, model)}" for key, label in BANDS for s in sums]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for u in units:
        cells = [u]
        for key, _label in BANDS:
            for st in stats:
                r = st.get((u, key))
                cells.append("–" if r is None else f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summaries", nargs="+", type=Path, help="linstab sweep summary --json files")
    ap.add_argument("--units", default=None, help="comma list of units (default: all)")
    ap.add_argument("--model", default=None, help="model name (default: the first in the first summary)")
    args = ap.parse_args()
    units = [u.strip() for u in args.units.split(",")] if args.units else None
    print(table(args.summaries, units, args.model))


if __name__ == "__main__":
    main()
