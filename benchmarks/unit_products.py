"""Closed-form vs autodiff unit Jacobians: agreement on every unit, and J V block timing.

Run:  LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/unit_products.py \
          --out benchmarks/results/unit_products.json

For each of the 27 units of ResNet-56 (akamaster) at default image 0, in float64: the
relative difference ``||J_closed V - J_autodiff V|| / ||J_autodiff V||`` on a block of 8
random vectors, likewise for ``J^T``. Then the time of one ``J V`` block of 256 vectors on unit
1.5 (float32 and float64), closed form vs autodiff, median of repeats in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

import linstab  # noqa: E402


def timed(op, X: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``op @ X`` over ``repeats`` runs after one warm-up."""

    def fn():
        return op @ X

    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet56-akamaster")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/unit_products.json")
    args = ap.parse_args()
    net = linstab.load_model(args.model)
    x, _ = linstab.default_images([0])
    g = torch.Generator().manual_seed(0)
    lin = net.linearize(x[0], dtype=torch.float64)
    agree = []
    for u in net.units:
        Jc, Ja = lin.unit(u.stage, u.index, "closed"), lin.unit(u.stage, u.index, "autodiff")
        V = torch.randn((8, *u.in_shape), generator=g, dtype=torch.float64)
        W = torch.randn((8, *u.out_shape), generator=g, dtype=torch.float64)
        a, b = Jc @ V, Ja @ V
        c, d = Jc.T @ W, Ja.T @ W
        agree.append(
            {
                "unit": u.address,
                "kind": u.kind,
                "rel_diff_JV": float((a - b).norm() / b.norm()),
                "rel_diff_JTW": float((c - d).norm() / d.norm()),
            }
        )
    worst = max(max(r["rel_diff_JV"], r["rel_diff_JTW"]) for r in agree)
    timing = {}
    for dtype in (torch.float32, torch.float64):
        lin_d = net.linearize(x[0], dtype=dtype)
        Jc, Ja = lin_d.unit(1, 5, "closed"), lin_d.unit(1, 5, "autodiff")
        V = torch.randn((256, *Jc.in_shape), generator=g, dtype=dtype)
        W = torch.randn((256, *Jc.out_shape), generator=g, dtype=dtype)
        name = str(dtype).replace("torch.", "")
        t = {
            "closed_JV_s": timed(Jc, V, args.repeats),
            "autodiff_JV_s": timed(Ja, V, args.repeats),
            "closed_JTW_s": timed(Jc.T, W, args.repeats),
            "autodiff_JTW_s": timed(Ja.T, W, args.repeats),
        }
        t["speedup_JV"] = t["autodiff_JV_s"] / t["closed_JV_s"]
        t["speedup_JTW"] = t["autodiff_JTW_s"] / t["closed_JTW_s"]
        timing[name] = t
    result = {
        "environment": environment(),
        "model": args.model,
        "image": 0,
        "agreement_float64": agree,
        "worst_rel_diff": worst,
        "timing_unit_1.5_block_256": timing,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"worst closed-vs-autodiff relative difference over {len(agree)} units: {worst:.2e}")
    for name, t in timing.items():
        print(
            f"{name}: J V (256 vectors) closed {t['closed_JV_s']:.3f} s, autodiff "
            f"{t['autodiff_JV_s']:.3f} s ({t['speedup_JV']:.1f}x); J^T W closed "
            f"{t['closed_JTW_s']:.3f} s, autodiff {t['autodiff_JTW_s']:.3f} s ({t['speedup_JTW']:.1f}x)"
        )


if __name__ == "__main__":
    main()
