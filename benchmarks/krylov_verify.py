"""Cost of block-krylov's verification cycle (``block_krylov(..., verify=True)``, the default) on
the report's top-k: the top-64 right singular vectors of every regular last-stage unit, float64,
as the report's Figures 3-4 projections compute them.

Each (image, unit) is solved twice in one process, without and with the verification cycle,
alternating the order; the JSON records seconds, operator products, whether the values came
back identical and how often a verification found a missed repeat. (The verification cycle
ran after every converged solve at first: 1.37x the seconds, 1.34x the products here, nothing
found; it now runs only when the k values hold block-size copies of one value, which these
units' top-64 never do.) Run on an otherwise idle machine:

    LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/krylov_verify.py \\
        --model resnet56-linstab --images 0,1 --out benchmarks/results/krylov_verify.json
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

import linstab  # noqa: E402
from linstab.linalg import krylov  # noqa: E402

spectrum_module = importlib.import_module("linstab.spectra.spectrum")  # the module, not the function


def solve(op, k: int, verify: bool) -> tuple[float, dict]:
    """Seconds and the result's values, products and verification count for one top-k solve."""
    original = spectrum_module.block_krylov
    spectrum_module.block_krylov = functools.partial(krylov.block_krylov, verify=verify)
    try:
        t = time.perf_counter()
        res = spectrum_module.spectrum(op, "topk", k=k, vectors=True, seed=0)
        sec = time.perf_counter() - t
    finally:
        spectrum_module.block_krylov = original
    products = sum(v for v in res.info.get("products", {}).values() if isinstance(v, int | float))
    return sec, {
        "values": res.values.double(),
        "products": products,
        "missed": int(res.info.get("missed_repeats_found", 0)),
        "route": res.route,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet56-linstab")
    p.add_argument("--images", default="0,1", help="default-image indices, comma-separated")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    net = linstab.load_model(a.model)
    images, _ = linstab.default_images()
    last = len(net.stages)
    units = [u for u in net.units if u.stage == last and u.kind == "regular"]
    rows = []
    for n, i in enumerate(int(v) for v in a.images.split(",")):
        lin = net.linearize(images[i], dtype=torch.float64)
        for j, u in enumerate(units):
            op = lin.unit(u.stage, u.index)
            order = (False, True) if (n + j) % 2 == 0 else (True, False)
            got = {v: solve(op, a.k, v) for v in order}
            (s0, r0), (s1, r1) = got[False], got[True]
            rows.append(
                {
                    "image": i,
                    "unit": u.address,
                    "route": r1["route"],
                    "seconds_no_verify": round(s0, 3),
                    "seconds_verify": round(s1, 3),
                    "products_no_verify": r0["products"],
                    "products_verify": r1["products"],
                    "values_identical": bool(torch.equal(r0["values"], r1["values"])),
                    "max_value_difference": float((r0["values"] - r1["values"]).abs().max()),
                    "missed_repeats_found": r1["missed"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    t0 = sum(r["seconds_no_verify"] for r in rows)
    t1 = sum(r["seconds_verify"] for r in rows)
    out = {
        "model": a.model,
        "k": a.k,
        "threads": a.threads,
        "rows": rows,
        "total_seconds_no_verify": round(t0, 2),
        "total_seconds_verify": round(t1, 2),
        "ratio_verify_over_no_verify": round(t1 / t0, 3) if t0 > 0 else None,
        "products_ratio": round(
            sum(r["products_verify"] for r in rows) / max(1, sum(r["products_no_verify"] for r in rows)), 3
        ),
        "all_values_identical": all(r["values_identical"] for r in rows),
        "environment": environment(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print({k: v for k, v in out.items() if k not in ("rows", "environment")})


if __name__ == "__main__":
    main()
