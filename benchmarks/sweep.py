"""Sweep throughput: images per hour for exact band counts of all units, with a plain loop and
with ``linstab sweep`` on a LocalCluster of 1 and 2 single-thread workers, in the same run.

Run (ResNet-56, the issue's configuration; about 1-2 minutes per image and mode on 2 cores):

    OMP_NUM_THREADS=1 LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/sweep.py \
        --model resnet56-akamaster --images 0-3 --out benchmarks/results/sweep.json

Check that it works (seconds):

    OMP_NUM_THREADS=1 python benchmarks/sweep.py --model resnet20-linstab --images 0-1 \
        --out /tmp/sweep-bench.json

Modes (same plan, same images, one after the other):

* ``loop``: ``run_task`` on every task in this process, one torch thread, no Dask, no Parquet
  (the baseline);
* ``workers-N``: :func:`linstab.sweep.run_sweep` on a LocalCluster of ``N`` worker processes
  with one thread each, into a fresh directory. The cluster is started and the workers warmed
  (model loaded) before the clock starts; ``startup_s`` reports that part separately and
  ``images_per_hour_with_startup`` includes it.

Every mode must give the same band counts (checked: ``consistent``). The JSON holds an
``environment`` record (versions, CPU count, load average before and after each mode). Times on
a machine shared with other jobs are upper bounds: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

from linstab.sweep import Recipe, local_cluster, plan_sweep, read_rows, run_sweep, run_task  # noqa: E402
from linstab.sweep.tasks import get_network  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _counts(rows: list[dict]) -> dict:
    return {
        (r["image"], r["unit"]): (r["above"], r["plateau"], r["below"], r["zero"])
        for r in rows
        if r["analysis"] == "bands" and r["status"] == "ok"
    }


def add_speedups(results: dict) -> None:
    """Add ``speedup_vs_loop`` and ``speedup_vs_workers_1`` (wall-time ratios of the same run)."""
    for ref, key in (("loop", "speedup_vs_loop"), ("workers-1", "speedup_vs_workers_1")):
        base = results.get(ref, {}).get("seconds")
        for mode, r in results.items():
            if base and mode not in ("loop", ref):
                r[key] = round(base / r["seconds"], 3)


def _warm(models: list[dict]) -> int:
    """On a worker: load the models (cached per process) so the clock measures analyses only."""
    for m in models:
        get_network(m)
    return os.getpid()


def run_loop(plan) -> tuple[float, list[dict]]:
    import torch

    torch.set_num_threads(1)
    for m in plan.models:
        get_network(m)
    t = time.perf_counter()
    rows = [row for task in plan.tasks for row in run_task(task)]
    return time.perf_counter() - t, rows


def run_workers(plan, n: int, root: Path) -> tuple[float, float, list[dict]]:
    from distributed import Client

    t0 = time.perf_counter()
    cluster = local_cluster(n)  # the cluster `linstab sweep --workers N` starts
    client = Client(cluster)
    try:
        client.run(_warm, [m.to_dict() for m in plan.models])
        startup = time.perf_counter() - t0
        out = root / f"workers-{n}"
        t = time.perf_counter()
        res = run_sweep(out, plan, client=client, progress=False)
        seconds = time.perf_counter() - t
        if res.errors:
            raise RuntimeError(f"{res.errors} tasks failed in {out}")
        return startup, seconds, read_rows(out).to_pylist()
    finally:
        client.close()
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet56-akamaster")
    p.add_argument("--images", default="0-3", help="image spec (default 0-3: 4 of the lossless images)")
    p.add_argument("--workers", default="1,2", help="LocalCluster sizes to run (default 1,2)")
    p.add_argument("--no-loop", action="store_true", help="skip the plain loop")
    p.add_argument("--note", default="", help="free text recorded in the JSON (e.g. 'machine shared')")
    p.add_argument("--out", default="benchmarks/results/sweep.json")
    args = p.parse_args(argv)

    plan = plan_sweep([args.model], args.images, Recipe(analyses=("bands",), units="all"))
    n_img = len(plan.images.refs)
    sizes = [int(w) for w in args.workers.split(",") if w.strip()]
    log(f"{args.model}: {n_img} images x {len(plan.units[args.model])} units, exact band counts")
    results: dict = {}
    reference = None
    consistent = True
    with tempfile.TemporaryDirectory(prefix="linstab-sweep-bench-") as tmp:
        modes = ([] if args.no_loop else ["loop"]) + [f"workers-{n}" for n in sizes]
        for mode in modes:
            load_before = os.getloadavg()
            log(f"{mode} ...")
            if mode == "loop":
                startup, (seconds, rows) = 0.0, run_loop(plan)
            else:
                startup, seconds, rows = run_workers(plan, int(mode.split("-")[1]), Path(tmp))
            counts = _counts(rows)
            if reference is None:
                reference = counts
            elif counts != reference:
                consistent = False
            task_seconds = [
                sum(r["seconds"] or 0 for r in rows if r["task_id"] == t["task_id"]) for t in plan.tasks
            ]
            results[mode] = {
                "seconds": round(seconds, 3),
                "startup_s": round(startup, 3),
                "images_per_hour": round(n_img * 3600 / seconds, 2),
                "images_per_hour_with_startup": round(n_img * 3600 / (seconds + startup), 2),
                "seconds_per_image": round(seconds / n_img, 3),
                "task_seconds": [round(s, 3) for s in task_seconds],
                "load_before": [round(v, 2) for v in load_before],
                "load_after": [round(v, 2) for v in os.getloadavg()],
            }
            log(
                f"{mode}: {seconds:.1f} s, {results[mode]['images_per_hour']:.1f} images/hour "
                f"(startup {startup:.1f} s)"
            )
    add_speedups(results)
    env = environment()
    try:
        import dask
        import distributed
        import pyarrow

        env.update(dask=dask.__version__, distributed=distributed.__version__, pyarrow=pyarrow.__version__)
    except ImportError:  # pragma: no cover
        pass
    env["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    record = {
        "benchmark": "sweep throughput, exact band counts of all units",
        "model": args.model,
        "images": args.images,
        "n_images": n_img,
        "units": plan.units[args.model],
        "consistent": consistent,
        "results": results,
        "note": args.note,
        "environment": env,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {out}; consistent band counts across modes: {consistent}")
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
