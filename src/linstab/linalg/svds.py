"""SciPy ``svds`` (ARPACK, PROPACK, LOBPCG) on an operator, returning the same result object."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from ..operators.base import LinearOperator
from .results import SpectrumResult, check_finite


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
    from scipy.linalg import LinAlgError
    from scipy.sparse.linalg import ArpackNoConvergence, svds
    from scipy.sparse.linalg import LinearOperator as SciPyOperator

    t0 = time.perf_counter()
    base = op.to_scipy()
    counts = {"forward": 0, "adjoint": 0}
    bad: list[ValueError] = []

    def finite(x: np.ndarray, what: str) -> np.ndarray:
        # refused here, by name: SciPy would fail later with an unrelated error (ARPACK -9999,
        # LOBPCG "array must not contain infs") or, PROPACK, return zeros
        if not np.isfinite(x).all():
            try:
                check_finite(torch.from_numpy(np.asarray(x)), f"{solver}'s {what} products")
            except ValueError as exc:
                bad.append(exc)  # PROPACK's Fortran callback turns it into a SystemError
                raise
        return x

    def mv(v):
        counts["forward"] += 1 if np.ndim(v) == 1 else np.shape(v)[1]
        return finite(base.matvec(v), "forward")

    def rmv(w):
        counts["adjoint"] += 1 if np.ndim(w) == 1 else np.shape(w)[1]
        return finite(base.rmatvec(w), "adjoint")

    def mm(V):
        counts["forward"] += V.shape[1]
        return finite(base.matmat(V), "forward")

    def rmm(W):
        counts["adjoint"] += W.shape[1]
        return finite(base.rmatmat(W), "adjoint")

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
    except SystemError:
        if bad:
            raise bad[0] from None
        raise
    except LinAlgError as exc:
        # PROPACK reports non-convergence (and an invariant subspace it cannot continue from)
        # by raising: a result that did not converge, as ARPACK's
        if solver != "propack":
            raise
        converged, err = False, str(exc)
        u = s = vt = None
    if bad:
        raise bad[0]
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
    # the residual alone passes a "triplet" with a zero vector (PROPACK's which="SM" on a tall
    # operator returns such spurious zeros): the vectors must be orthonormal too
    eye = torch.eye(st.numel(), dtype=torch.float64)
    orth = max(
        float((U.to(torch.float64).T @ U.to(torch.float64) - eye).abs().max()),
        float((V.to(torch.float64).T @ V.to(torch.float64) - eye).abs().max()),
    )
    info = {"products": counts}
    if not orth <= rtol:
        converged = False
        info["error"] = f"singular vectors not orthonormal (max |X^T X - I| = {orth:.3g})"
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
        info=info,
    )
