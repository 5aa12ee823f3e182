"""A unit whose reduction is rank deficient: all singular values through the pivoted core
(``route="structured"``) vs the ``m x m`` Gram of its active rows (what ``route="auto"`` now
takes when ``m <= 1.25 k``), timed in one run, one torch thread, float32 values as in the
report's Figure 1.

    LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/deficient_route.py \\
        --model resnet56-linstab --unit 1.1 --images 0 1 --out benchmarks/results/deficient_route.json

Writes, per image: ``m``, the rank of the core, the seconds of both routes (with their parts),
their ratio, the largest difference of the two value lists (absolute and over the larger stated
error bound), and each route's largest difference from float64 values (the Gram route in
float64) over its own bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

import linstab  # noqa: E402
from linstab.network import parse_unit  # noqa: E402
from linstab.spectra import spectrum  # noqa: E402
from linstab.spectra.accuracy import value_error  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56-linstab")
    ap.add_argument("--unit", default="1.1")
    ap.add_argument("--images", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = linstab.load_model(args.model)
    x, _ = linstab.default_images(args.images)
    rows = []
    for i, img in enumerate(args.images):
        op = net.linearize(x[i], dtype=torch.float64).unit(*parse_unit(args.unit))
        t = time.perf_counter()
        piv = spectrum(op, "exact", route="structured", dtype=torch.float32)
        t_piv = time.perf_counter() - t
        t = time.perf_counter()
        auto = spectrum(op, "exact", dtype=torch.float32)
        t_auto = time.perf_counter() - t
        t = time.perf_counter()
        ref = spectrum(op, "exact", route="gram", dtype=torch.float64).values
        t_ref = time.perf_counter() - t
        diff = (piv.values.double() - auto.values.double()).abs()
        bound = torch.maximum(value_error(piv), value_error(auto))
        d_piv, d_auto = (piv.values.double() - ref).abs(), (auto.values.double() - ref).abs()
        alpha = abs(piv.alpha)
        row = {
            "image": img,
            "m": piv.info["m"],
            "rank": piv.info["core_size"],
            "reduction": piv.info["reduction"],
            "auto_route": auto.route,
            "auto_reduction": auto.info.get("reduction"),
            "structured_s": round(t_piv, 2),
            "structured_parts": {k: round(v, 2) for k, v in piv.timings.items()},
            "auto_s": round(t_auto, 2),
            "auto_parts": {k: round(v, 2) for k, v in auto.timings.items()},
            "speedup": round(t_piv / t_auto, 2),
            "max_abs_diff": float(diff.max()),
            "max_diff_over_bound": float((diff / bound).max()),
            "reference_float64_s": round(t_ref, 2),
            "structured_vs_float64": {
                "max_abs_diff": float(d_piv.max()),
                "max_diff_over_bound": float((d_piv / value_error(piv)).max()),
            },
            "auto_vs_float64": {
                "max_abs_diff": float(d_auto.max()),
                "max_diff_over_bound": float((d_auto / value_error(auto)).max()),
            },
            "float64_within_1e-10_of_alpha": int(((ref - alpha).abs() <= 1e-10).sum()),
            "n_exact_ones_structured": piv.n_exact_ones,
            "n_exact_ones_at_least_auto": auto.info.get("n_exact_ones_at_least"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    res = {
        "benchmark": "rank-deficient unit: pivoted structured core vs m x m Gram (float32 values)",
        "command": "python benchmarks/deficient_route.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "unit": args.unit,
        "rows": rows,
        "environment": environment(),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
