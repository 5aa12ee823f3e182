"""Large units: top-32 singular values, band estimates and SLQ densities of ImageNet ResNet units.

ResNet-50 at 224 x 224 (random weights with randomized BN statistics unless ``--weights`` is
given; every record says which), one unit per stage plus a regular unit of stage 1 (1.1, 1.2,
2.1, 3.1, 4.1 by default). Per unit, each in a fresh child process so that the peak memory is
that task's own (``ru_maxrss`` on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA):

* ``topk``: top-32 values by linstab's block Krylov solver on the closed-form operator, and the
  baseline, SciPy ``svds`` (ARPACK) on ``torch.func`` jvp/vjp products of the same unit, in the
  same run (ratio of the two); the values are compared;
* ``bands``: band counts with 95% intervals, target half-width ``--accuracy`` x n (1%), Lanczos
  steps chosen adaptively (``estimate_bands`` without ``steps``);
* ``density``: an SLQ density (histogram over the singular values; steps from the kernel width).

The ARPACK baseline runs on ``--arpack-units`` (default 1.2, the unit of the target).

Targets on a 2-core CPU: top-32 of unit 1.2 >= 5x faster than ARPACK and under 60 s in float32,
band estimates at +-1% of n under 5 minutes, peak memory under 4 GB.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python benchmarks/large_units.py --out benchmarks/results/large_units.json
    python benchmarks/large_units.py --device cuda --out large_units_cuda.json   # benchmarks/gpu.sh
    python benchmarks/large_units.py --input-size 64 --units 1.2 --tasks topk --out /tmp/x.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment  # noqa: E402

from linstab import spectra as S  # noqa: E402
from linstab.linalg.band_estimates import estimate_bands  # noqa: E402
from linstab.linalg.slq import slq  # noqa: E402
from linstab.network import parse_unit  # noqa: E402
from linstab.network.imagenet import imagenet_network  # noqa: E402

TASKS = ("topk", "bands", "density")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _setup(cfg: dict):
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    net = imagenet_network(
        cfg["model"],
        weights=cfg["weights"],
        seed=0,
        bn="random" if cfg["weights"] is None else "torchvision",
        input_size=cfg["input_size"],
    )
    net.module.to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((3, cfg["input_size"], cfg["input_size"]), generator=g).to(device)
    dtype = torch.float32 if cfg["dtype"] == "float32" else torch.float64
    lin = net.linearize(x, dtype=dtype)
    return net, lin, device


def _task(cfg: dict, unit: str, task: str, queue) -> None:
    """One measurement in a child process; puts a JSON-able record on ``queue``."""
    try:
        net, lin, device = _setup(cfg)
        s, k = parse_unit(unit)
        op = lin.unit(s, k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        base_mb = _peak_mb(device)
        rec = {"unit": unit, "task": task, "n": min(op.shape), "shape": list(op.shape), "model": net.name}
        t0 = time.perf_counter()
        if task == "topk":
            res = S.spectrum(op, "topk", k=cfg["k"])
            rec.update(seconds=time.perf_counter() - t0, values=res.values.tolist(), converged=res.converged)
            rec["max_residual"] = float(res.residuals.max())
            if unit in cfg["arpack_units"]:
                opa = lin.unit(s, k, method="autodiff")
                t1 = time.perf_counter()
                base = S.spectrum(opa, "topk", k=cfg["k"], solver="arpack", products="operator")
                rec["arpack_seconds"] = time.perf_counter() - t1
                rec["arpack_values"] = base.values.tolist()
                rec["ratio"] = rec["arpack_seconds"] / rec["seconds"]
                ref = base.values.double()
                rec["max_rel_diff_vs_arpack"] = float(((res.values.double() - ref).abs() / ref).max())
        elif task == "bands":
            # adaptive Lanczos steps (stop once every interval meets +-accuracy n)
            est = estimate_bands(op, accuracy=cfg["accuracy"], seed=0)
            rec.update(seconds=time.perf_counter() - t0, estimate=est.to_dict())
            rec["met_target"] = all(
                (est.band(b).upper - est.band(b).lower) / 2 <= cfg["accuracy"] * est.n for b in est.counts
            )
        else:
            res = slq(op, accuracy=cfg["accuracy"], seed=0)
            rec.update(seconds=time.perf_counter() - t0, n_probes=res.n_probes, steps=res.lanczos_steps)
            rec.update(sigma=res.sigma, s_max_estimate=res.s_max_estimate(), timings=res.timings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rec["peak_mb"] = _peak_mb(device)
        rec["peak_mb_before_task"] = base_mb
        queue.put(rec)
    except Exception as exc:  # a failed task is recorded, the others go on
        queue.put({"unit": unit, "task": task, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-2000:]})  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="torchvision:resnet50")
    p.add_argument("--weights", default=None, help="torchvision state dict (default: random weights)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--units", default="1.1,1.2,2.1,3.1,4.1")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--accuracy", type=float, default=0.01, help="band/density target, fraction of n")
    p.add_argument("--no-arpack", action="store_true", help="skip the ARPACK baseline")
    p.add_argument("--arpack-units", default="1.2", help="units that also run the ARPACK baseline ('all')")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"unknown tasks {bad}; choose from {TASKS}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    units = [u.strip() for u in args.units.split(",") if u.strip()]
    arpack = [] if args.no_arpack else units if args.arpack_units == "all" else args.arpack_units.split(",")
    cfg = {
        "model": args.model, "weights": args.weights, "input_size": args.input_size, "dtype": args.dtype,
        "device": args.device, "threads": args.threads, "k": args.k, "accuracy": args.accuracy,
        "arpack_units": [u.strip() for u in arpack if u.strip()],
    }  # fmt: skip
    ctx = mp.get_context("spawn")
    records = []
    for unit in units:
        for task in tasks:
            q = ctx.Queue()
            proc = ctx.Process(target=_task, args=(cfg, unit, task, q))
            proc.start()
            rec = q.get()
            proc.join()
            records.append(rec)
            msg = rec.get("error") or (
                f"{rec['seconds']:.1f} s, peak {rec['peak_mb']:.0f} MB"
                + (f", ARPACK {rec['arpack_seconds']:.1f} s ({rec['ratio']:.1f}x)" if "ratio" in rec else "")
            )
            print(f"unit {unit} {task}: {msg}", flush=True)
    out = {"config": cfg, "environment": environment(), "records": records,
           "targets": {"topk_unit_1.2_ratio_min": 5.0, "topk_unit_1.2_seconds_max": 60.0,
                       "bands_seconds_max": 300.0, "peak_mb_max": 4096.0}}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
