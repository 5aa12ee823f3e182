"""SciPy ``svds`` (ARPACK, PROPACK, LOBPCG) on an operator, returning the same result object."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from ..operators.base import LinearOperator
from .results import SpectrumResult


def scipy_svds(
    op: LinearOperator,
    k: int,
    largest: bool,
    solver: str,
    tol: float,
    max_iter: int | None,
    seed: int,
    vectors: bool,
) -> SpectrumResult:
    """Top-k or bottom-k singular triplets by SciPy's ``svds`` on the operator's SciPy export,
    returned as a :class:`SpectrumResult` with residuals (the baseline of the benchmarks).
    """
    from scipy.sparse.linalg import ArpackNoConvergence, svds
    from scipy.sparse.linalg import LinearOperator as SciPyOperator

    t0 = time.perf_counter()
    base = op.to_scipy()
    counts = {"forward": 0, "adjoint": 0}

    def mv(v):
        counts["forward"] += 1 if np.ndim(v) == 1 else np.shape(v)[1]
        return base.matvec(v)

    def rmv(w):
        counts["adjoint"] += 1 if np.ndim(w) == 1 else np.shape(w)[1]
        return base.rmatvec(w)

    def mm(V):
        counts["forward"] += V.shape[1]
        return base.matmat(V)

    def rmm(W):
        counts["adjoint"] += W.shape[1]
        return base.rmatmat(W)

    A = SciPyOperator(base.shape, matvec=mv, rmatvec=rmv, matmat=mm, rmatmat=rmm, dtype=base.dtype)
    converged, err = True, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            u, s, vt = svds(
                A,
                k=k,
                which="LM" if largest else "SM",
                tol=tol,
                maxiter=max_iter,
                solver=solver,
                random_state=seed,
                return_singular_vectors=True,
            )
    except ArpackNoConvergence as exc:
        converged, err = False, str(exc)
        u = s = vt = None
    if s is None:
        vals = torch.full((k,), float("nan"), dtype=op.dtype)
        return SpectrumResult(
            values=vals,
            method="topk" if largest else "bottomk",
            route=solver,
            dtype=op.dtype,
            converged=False,
            timings={"total": time.perf_counter() - t0},
            shape=op.shape,
            tol=tol,
            info={"products": counts, "error": err},
        )
    order = np.argsort(-s)  # descending, for topk and bottomk alike
    s, u, vt = s[order], u[:, order], vt[order]
    U = torch.from_numpy(np.ascontiguousarray(u)).to(op.dtype)
    V = torch.from_numpy(np.ascontiguousarray(vt.T)).to(op.dtype)
    st = torch.from_numpy(np.ascontiguousarray(s)).to(op.dtype)
    JV = op.matmat(V.to(op.device)).cpu()
    JtU = op.rmatmat(U.to(op.device)).cpu()
    resid = torch.sqrt(((JV - U * st).norm(dim=0)) ** 2 + ((JtU - V * st).norm(dim=0)) ** 2)
    smax = float(st.max()) if st.numel() else 0.0
    rtol = max(tol, math.sqrt(torch.finfo(op.dtype).eps)) if tol else math.sqrt(torch.finfo(op.dtype).eps)
    converged = bool((resid <= rtol * max(smax, 1e-300)).all())
    return SpectrumResult(
        values=st,
        U=U if vectors else None,
        V=V if vectors else None,
        method="topk" if largest else "bottomk",
        route=solver,
        dtype=op.dtype,
        converged=converged,
        iterations=0,
        residuals=resid,
        timings={"total": time.perf_counter() - t0},
        shape=op.shape,
        tol=tol,
        info={"products": counts},
    )
