"""Symmetric eigensolvers for the exact spectra, values only, float64, 1 and 2 threads.

``torch.linalg.eigvalsh`` (LAPACK ``syevd``; MKL in the x86 CPU wheels) against LAPACK's 2-stage
``dsyev_2stage`` from the OpenBLAS that SciPy bundles (``LINSTAB_EIGVALSH=openblas-2stage``), on
one seeded random symmetric matrix of the size of P1's structured core (8022), each solver
once per thread count, in one process. Run on an otherwise idle machine:

    python benchmarks/eigensolvers.py --n 8022 --out benchmarks/results/eigensolvers.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

from linstab.linalg import eigh  # noqa: E402


def time_solvers(A: np.ndarray, threads: int) -> list[dict]:
    """``torch.linalg.eigvalsh`` and (where SciPy's OpenBLAS has it) ``dsyev_2stage`` on the
    symmetric float64 matrix ``A`` with ``threads`` threads: one record per solver."""
    torch.set_num_threads(threads)
    t = time.perf_counter()
    ref = torch.linalg.eigvalsh(torch.from_numpy(A)).numpy()
    sec = time.perf_counter() - t
    out = [{"solver": "torch.linalg.eigvalsh (syevd)", "threads": threads, "seconds": sec}]
    fns = eigh.load_2stage()
    if fns is not None and torch.float64 in fns:
        n = A.shape[0]
        a = np.array(A, order="C")
        w2 = np.empty(n)
        with eigh.openblas_threads(threads):
            t = time.perf_counter()
            info = fns[torch.float64](102, b"N", b"U", n, a.ctypes.data, n, w2.ctypes.data)
            sec = time.perf_counter() - t
        out.append(
            {
                "solver": "OpenBLAS dsyev_2stage",
                "threads": threads,
                "seconds": sec,
                "info": int(info),
                "max_abs_diff_vs_syevd": float(np.abs(np.sort(w2) - ref).max()),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8022)
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--out", default="benchmarks/results/eigensolvers.json")
    args = ap.parse_args()
    env = environment()
    g = np.random.default_rng(0)
    A = g.standard_normal((args.n, args.n))
    A = (A + A.T) / 2
    results = []
    for th in (int(t) for t in args.threads.split(",")):
        for rec in time_solvers(A, th):
            results.append(rec)
            print(rec, flush=True)
    env["loadavg_end"] = list(os.getloadavg())
    out = {"environment": env, "command": " ".join(["python"] + sys.argv), "n": args.n, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
