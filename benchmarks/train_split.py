"""Throughput of CPU training: one process with T threads vs P processes of one thread each that
split every batch (data parallel: each process runs batch/P images, gradients all-reduced with
gloo, as ``torch.nn.parallel.DistributedDataParallel`` would). Float32, ``channels_last``,
random data; ratios from the same run, JSON with an environment record.

Why: on a 2-core AVX2 machine a ResNet-110 epoch took 1142 s at two threads and about 1460-1500 s
at one thread (the run's own log), so two threads gain only ~1.3x; small convolutions scale
poorly across threads. This measures what splitting the batch over processes would gain.

Usage (from the repository root; needs a quiet machine)::

    python benchmarks/train_split.py --depth 110 --out benchmarks/results/train_split_110.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment  # noqa: E402

from linstab.models import CifarResNet  # noqa: E402


def _model_and_data(depth: int, batch: int, seed: int):
    torch.manual_seed(0)
    model = CifarResNet(depth, "B").to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    return model, x, y


def _steps(model, x, y, n: int, allreduce: bool) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    params = list(model.parameters())
    times = []
    for _ in range(n):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if allreduce:
            flat = torch.cat([p.grad.flatten() for p in params])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            o = 0
            for p in params:
                p.grad.copy_(flat[o : o + p.numel()].view_as(p.grad))
                o += p.numel()
        opt.step()
        times.append(time.perf_counter() - t)
    return times


def single(depth: int, batch: int, threads: int, warmup: int, repeats: int) -> list[float]:
    torch.set_num_threads(threads)
    model, x, y = _model_and_data(depth, batch, 0)
    return _steps(model, x, y, warmup + repeats, False)[warmup:]


def _worker(rank: int, world: int, store_file: str, depth: int, batch: int, steps: int, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    model, x, y = _model_and_data(depth, batch // world, rank + 1)
    dist.barrier()
    times = _steps(model, x, y, steps, True)
    queue.put((rank, times))
    dist.destroy_process_group()


def split(depth: int, batch: int, processes: int, warmup: int, repeats: int) -> list[float]:
    """Per-step wall times of rank 0 (every step ends in an all-reduce, so the ranks keep pace)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store_file = os.path.join(tmp, "store")
        procs = [
            ctx.Process(
                target=_worker, args=(r, processes, store_file, depth, batch, warmup + repeats, queue)
            )
            for r in range(processes)
        ]
        for p in procs:
            p.start()
        results = dict(queue.get() for _ in procs)
        for p in procs:
            p.join()
    return results[0][warmup:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=110)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for name, fn in (
        ("1 process, 1 thread", lambda: single(args.depth, args.batch, 1, args.warmup, args.repeats)),
        (
            f"1 process, {args.processes} threads",
            lambda: single(args.depth, args.batch, args.processes, args.warmup, args.repeats),
        ),
        (
            f"{args.processes} processes x 1 thread, batch split",
            lambda: split(args.depth, args.batch, args.processes, args.warmup, args.repeats),
        ),
    ):
        t = fn()
        rows.append({"setup": name, "median_s": statistics.median(t), "runs_s": t})
        print(
            f"depth {args.depth} batch {args.batch} {name}: {statistics.median(t):.3f} s per step", flush=True
        )
    base = rows[0]["median_s"]
    for r in rows:
        r["speedup_vs_one_thread"] = base / r["median_s"]
    out = {"depth": args.depth, "batch": args.batch, "processes": args.processes, "rows": rows,
           "environment": environment()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
