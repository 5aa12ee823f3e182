"""Time of one SGD training step of a CIFAR ResNet per precision (float32, bf16 autocast), with
and without ``torch.compile``; ratios from the same run, JSON with an environment record.

Usage (from the repository root; needs a quiet machine)::

    python benchmarks/train_step.py --depth 56 --threads 1 --out benchmarks/results/train_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment  # noqa: E402

from linstab.models import CifarResNet  # noqa: E402
from linstab.training.precision import autocast, cpu_has_native_bf16  # noqa: E402


def step_times(
    depth: int, precision: str, compile_: bool, batch: int, warmup: int, repeats: int
) -> list[float]:
    torch.manual_seed(0)
    model = CifarResNet(depth, "B").to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile_ else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss = torch.nn.functional.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for compile_ in (False, True) if args.compile else (False,):
        for prec in ("float32", "bf16"):
            t = step_times(args.depth, prec, compile_, args.batch, args.warmup, args.repeats)
            rows.append(
                {"precision": prec, "compile": compile_, "median_s": statistics.median(t), "runs_s": t}
            )
            print(
                f"depth {args.depth} {prec:8s} compile={compile_}: {statistics.median(t):.3f} s", flush=True
            )
    base = rows[0]["median_s"]
    for r in rows:
        r["speedup_vs_float32_eager"] = base / r["median_s"]
    out = {"depth": args.depth, "batch": args.batch, "threads": args.threads,
           "cpu_native_bf16": cpu_has_native_bf16(), "rows": rows, "environment": environment()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
