"""PGD's minimal-eps search: walking the eps grid upwards vs bisecting its indices, same run.

    LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/pgd_search.py \\
        --model resnet56-linstab --images 0-19 --out benchmarks/results/pgd_search.json

One torch thread, the report's PGD settings (40 steps, 33-value grid, rtol 0.02, seed 0), the
default lossless images. Writes, per search: seconds, the PGD image-runs (grid tests plus
bisections, from each result's ``params``), and per image the minimal eps, the grid index and
the flip; then the ratio of the seconds and the images whose grid value differs (a bisection
result above the scan's first flipping value means that PGD's success was not monotone there).
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

from linstab.analyses.attacks import pgd  # noqa: E402
from linstab.data.images import default_images  # noqa: E402
from linstab.network.loading import load_model  # noqa: E402


def _indices(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56-linstab")
    ap.add_argument("--images", default="0-19", help="default lossless images, e.g. 0-19 or 0,3,5")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = load_model(args.model)
    x, y = default_images(_indices(args.images))
    record: dict = {"model": args.model, "images": args.images, "searches": {}}
    for search in ("scan", "bisect"):
        t = time.perf_counter()
        res = pgd(net, x, y, grid_search=search)
        seconds = time.perf_counter() - t
        runs = sum(r.params.get("grid_tests", 0) + r.params.get("bisections", 0) for r in res)
        record["searches"][search] = {
            "seconds": round(seconds, 2),
            "image_runs": runs,
            "per_image": [
                {"eps": r.eps, "grid_index": r.params.get("grid_index"), "success": r.success} for r in res
            ],
        }
        print(f"{search}: {seconds:.1f} s, {runs} PGD image-runs", flush=True)
    s, b = record["searches"]["scan"], record["searches"]["bisect"]
    record["speedup"] = round(s["seconds"] / b["seconds"], 3)
    record["grid_index_differs"] = [
        i
        for i, (p, q) in enumerate(zip(s["per_image"], b["per_image"], strict=True))
        if p["grid_index"] != q["grid_index"]
    ]
    record["environment"] = environment()
    print(f"speedup {record['speedup']}x; grid index differs at images {record['grid_index_differs']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
