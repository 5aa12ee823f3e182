"""The structured route's core when ``Q`` is rank deficient: ``K = L^T M_p L`` with a dense vs a
sparse ``M_p`` (same formula, same pivoted Cholesky ``G = P L L^T P^T``), timed in one run.

    LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/pivoted_core.py \
        --model resnet56-linstab --image 0 --unit 1.1 --out benchmarks/results/pivoted_core.json

Writes the core size, the rank, the seconds of ``dpstrf`` and of both products (one torch
thread, float32 products as in the report's Figure 1), their ratio and the largest relative
difference of the two ``K``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import lapack

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

import linstab  # noqa: E402
from linstab.network import parse_unit  # noqa: E402
from linstab.operators.factors import unit_factors  # noqa: E402
from linstab.spectra.reduction import core_matrices, reduce_unit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56-linstab")
    ap.add_argument("--image", type=int, default=0)
    ap.add_argument("--unit", default="1.1")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = linstab.load_model(args.model)
    x, _ = linstab.default_images([args.image])
    op = net.linearize(x[0], dtype=torch.float64).unit(*parse_unit(args.unit))
    red = reduce_unit(unit_factors(op))
    keepw = np.asarray(abs(red.G22).sum(axis=0)).ravel() > 0
    G, M = core_matrices(red, keepw)
    t = time.perf_counter()
    c, piv, rank, _ = lapack.dpstrf(G.toarray(), tol=-1.0, lower=1)
    t_chol = time.perf_counter() - t
    piv = piv - 1
    dtype = torch.float32
    L = np.tril(c)[:, :rank]
    t = time.perf_counter()
    Lt = torch.from_numpy(L).to(dtype)
    Md = torch.from_numpy(M.toarray()[np.ix_(piv, piv)]).to(dtype)
    K_dense = Lt.T @ (Md @ Lt)
    t_dense = time.perf_counter() - t
    del Md
    t = time.perf_counter()
    ML = torch.from_numpy(np.asarray(M.tocsr()[piv][:, piv] @ L)).to(dtype)
    K_sparse = torch.from_numpy(L).to(dtype).T @ ML
    t_sparse = time.perf_counter() - t
    diff = float((K_dense - K_sparse).abs().max() / K_dense.abs().max())
    res = {
        "benchmark": "rank-deficient structured core, dense vs sparse M",
        "model": args.model,
        "image": args.image,
        "unit": args.unit,
        "k": int(G.shape[0]),
        "rank": int(rank),
        "nnz_M": int(M.nnz),
        "dpstrf_s": round(t_chol, 2),
        "dense_products_s": round(t_dense, 2),
        "sparse_products_s": round(t_sparse, 2),
        "speedup": round(t_dense / t_sparse, 2),
        "max_rel_diff_K": diff,
        "environment": environment(),
    }
    print(json.dumps({k: v for k, v in res.items() if k != "environment"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
