"""Unit Jacobian products on an ImageNet ResNet: time of one ``J V`` / ``J^T W`` block.

Run (one thread; prints JSON, also written with --out):

    OMP_NUM_THREADS=1 python benchmarks/imagenet_products.py \
        --out benchmarks/results/imagenet_products.json

ResNet-50 at 224x224 with seeded random weights (BN statistics randomized, ``bn="random"``),
linearized at a seeded uniform-noise image. For units 1.1, 1.2, 2.1, 3.1, 4.1, in float32 and
float64, blocks of 1 and 8 vectors: median seconds of the closed-form product (``UnitJacobian``)
and of the autodiff product (``torch.func``), after one warm-up, and their relative difference.
Random weights: the times depend on shapes only, not on the weights' values.
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

from linstab.network import parse_unit  # noqa: E402
from linstab.network.imagenet import imagenet_network  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn", default="random", choices=["random", "torchvision"])
    ap.add_argument("--units", default="1.1,1.2,2.1,3.1,4.1")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-autodiff", action="store_true", help="time the closed form only")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    net = imagenet_network(args.arch, seed=args.seed, bn=args.bn, input_size=args.size)
    build_s = time.perf_counter() - t0
    image = torch.rand((3, args.size, args.size), generator=torch.Generator().manual_seed(args.seed))
    units = [parse_unit(u) for u in args.units.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    g = torch.Generator().manual_seed(1)
    rows, linearize_s = [], {}
    for dtype in (torch.float32, torch.float64):
        dname = str(dtype).replace("torch.", "")
        t = time.perf_counter()
        lin = net.linearize(image, dtype=dtype)
        linearize_s[dname] = time.perf_counter() - t
        for s, k in units:
            u = net.unit(s, k)
            t = time.perf_counter()
            J = lin.unit(s, k, "closed")
            build_closed = time.perf_counter() - t
            A = None if args.no_autodiff else lin.unit(s, k, "autodiff")
            for b in batches:
                V = torch.randn((b, *u.in_shape), generator=g, dtype=dtype)
                W = torch.randn((b, *u.out_shape), generator=g, dtype=dtype)
                row = {
                    "unit": u.address,
                    "module": u.name,
                    "kind": u.kind,
                    "shortcut": u.shortcut,
                    "in_shape": list(u.in_shape),
                    "out_shape": list(u.out_shape),
                    "dtype": dname,
                    "vectors": b,
                    "closed_build_s": build_closed,
                    "closed_JV_s": timed(lambda J=J, V=V: J @ V, args.repeats),
                    "closed_JTW_s": timed(lambda J=J, W=W: J.T @ W, args.repeats),
                }
                if A is not None:
                    row["autodiff_JV_s"] = timed(lambda A=A, V=V: A @ V, args.repeats)
                    row["autodiff_JTW_s"] = timed(lambda A=A, W=W: A.T @ W, args.repeats)
                    row["rel_diff_JV"] = rel(J @ V, A @ V)
                    row["rel_diff_JTW"] = rel(J.T @ W, A.T @ W)
                rows.append(row)
                print(
                    f"{dname} unit {u.address} B={b}: J V {row['closed_JV_s']:.4f} s, "
                    f"J^T W {row['closed_JTW_s']:.4f} s"
                    + (
                        f" (autodiff {row['autodiff_JV_s']:.4f} / {row['autodiff_JTW_s']:.4f} s)"
                        if A is not None
                        else ""
                    ),
                    file=sys.stderr,
                )
    result = {
        "environment": environment(),
        "note": f"torch threads: {torch.get_num_threads()}; random weights (timings depend on shapes only)",
        "model": net.record.as_dict(),
        "input_size": args.size,
        "image": f"uniform noise in [0, 1], seed {args.seed}",
        "repeats": args.repeats,
        "build_and_discover_s": build_s,
        "linearize_s": linearize_s,
        "rows": rows,
        "total_s": time.perf_counter() - t0,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
