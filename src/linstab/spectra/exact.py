"""Exact spectra: the structured route (identity-shortcut units), the Gram route on the active
rows, the dense route.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..linalg.dense_svd import svd, svdvals
from ..linalg.eigh import eigvalsh
from ..linalg.gram import gram
from ..linalg.results import SpectrumResult, check_finite
from ..operators.base import LinearOperator
from ..operators.closed_form import UnitJacobian
from ..operators.factors import UnitFactors, unit_factors, unit_products
from ..operators.rows import output_mask
from .reduction import banded_core, core_matrices, factors_js, reduce_unit

EXACT_REVISION = 2
"""Revision of the exact routes' values, part of the report's cache keys: raised whenever a
change moves computed values (2: float32 rank-deficient cores no longer set near-zero
eigenvalues to zero; the m x m Gram for such units)."""

# Above this ratio m / k the m x m Gram costs more than the rank-deficient core. Measured at
# unit 1.1 of resnet56-linstab (k = 11824, rank 11603, one thread, float32 values): pivoted
# Cholesky 14.6 s, the core's products 39.5 s, its eigenvalues about 38 s, i.e. about
# 2.4 k^3 in units of one n^3 eigensolve; the Gram route is one m^3 eigensolve
# (benchmarks/deficient_route.py compares both; results/deficient_route.json).
GRAM_OVER_PIVOTED = 1.25


def structured_spectrum(op: UnitJacobian, dtype: torch.dtype, exact_ones: bool = True) -> SpectrumResult:
    """All singular values of an identity-shortcut unit through its ``2r x 2r`` core.

    Args:
        op: the unit's Jacobian (identity shortcut, ReLU output mask).
        dtype: dtype of the dense linear algebra.
        exact_ones: when ``Q`` is rank deficient, count the values exactly ``|alpha|`` through a
            pivoted Cholesky of ``Q^T Q`` (about ``2.4 k^3`` work for a ``k x k`` core); the
            count needs float64 (in float32 ``n_exact_ones`` is ``None`` for such a unit, or
            for ``alpha = 0``, and ``info["n_exact_ones_at_least"]`` holds ``m - k``).
            ``False`` lets such a unit take the ``m x m`` Gram of its active rows instead when
            that is cheaper (``m <= 1.25 k``): same values (within the dtype's error bound),
            ``n_exact_ones`` is ``None`` then and ``info["n_exact_ones_at_least"]`` holds the
            structural ``m - k``.
    """
    t0 = time.perf_counter()
    f = unit_factors(op)
    red = reduce_unit(f)
    m, n, r, alpha = red.m, red.n, red.r, red.alpha
    # Wt_S columns that vanish carry nothing (zero columns of Q): drop them from Q and M
    keepw = np.asarray(abs(red.G22).sum(axis=0)).ravel() > 0
    timings = {"factors": f.seconds, "reduce": red.seconds}
    info = {"r": r, "m": m, "n": n, "layer": f.layer + 1, "dropped_inner": red.dropped}
    if r == 0:
        vals = torch.cat([torch.full((m,), abs(alpha), dtype=dtype), torch.zeros(n - m, dtype=dtype)])
        timings["total"] = time.perf_counter() - t0
        return SpectrumResult(
            values=vals,
            method="exact",
            route="structured",
            dtype=dtype,
            timings=timings,
            n_exact_ones=m,
            n_zero_structural=n - m,
            alpha=alpha,
            shape=op.shape,
            info=info,
        )
    rw = int(keepw.sum())
    if r + rw >= m:
        # the reduction is no smaller than J_S J_S^T: use the m x m Gram built from the factors
        res = gram_spectrum(op, dtype, f)
        res.timings["factors"] = f.seconds
        res.n_exact_ones = 0
        res.alpha = alpha
        res.info.update(info, note="2r >= m: no structural plateau; m x m Gram from sparse factors")
        return res
    K, band = banded_core(red, keepw, dtype, timings)
    t3 = time.perf_counter()
    if K is not None:
        k = r + rw
        info["reduction"] = "cholesky"
        info["bandwidth"], info["block"] = band
    elif not exact_ones and red.m <= GRAM_OVER_PIVOTED * (r + rw):
        # Q is rank deficient and the m x m Gram is the cheaper exact route
        res = gram_spectrum(op, dtype, f)
        res.timings.update(
            factors=f.seconds, reduce=red.seconds, banded_attempt=timings["gram"] + timings["cholesky"]
        )
        res.alpha = alpha
        info.update(
            reduction="gram (rank-deficient Q)",
            core_size=r + rw,
            n_exact_ones_at_least=red.m - r - rw,
            note="Q rank deficient and m <= 1.25 k: the m x m Gram is cheaper than a pivoted core",
        )
        res.info.update(info)
        res.timings["total"] = time.perf_counter() - t0
        return res
    else:
        # Q is rank deficient: pivoted Cholesky of the Gram, K = L^T P^T M P L
        from scipy.linalg import lapack

        G, M = core_matrices(red, keepw)
        c, piv, rank, _ = lapack.dpstrf(G.toarray(), tol=-1.0, lower=1)
        piv = piv - 1
        L = np.tril(c)[:, :rank]
        # M is sparse: M_p L as a sparse-dense product (float64), then one dense product in
        # dtype (was two dense products with a dense M_p; benchmarks/pivoted_core.py)
        ML = torch.from_numpy(np.asarray(M.tocsr()[piv][:, piv] @ L)).to(dtype)
        K = torch.from_numpy(L).to(dtype).T @ ML
        del ML
        K = (K + K.T) / 2
        k = int(rank)
        info["reduction"] = "pivoted-cholesky"
        timings["core"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    # K is symmetric: pass its column-major transpose (read in place by LAPACK; in torch's
    # fallback copied by a memcpy rather than a transposing copy)
    lam = eigvalsh(K.mT, overwrite=True)
    del K
    t5 = time.perf_counter()
    timings["eig"] = t5 - t4
    extra: int | None = 0
    if info["reduction"] == "pivoted-cholesky" or alpha == 0:
        # a rank-deficient Q (or alpha = 0) can leave exact zeros in the core: more values
        # equal |alpha| exactly. In float64 they are counted (and set to zero) with a
        # rounding-level tolerance; in float32 that tolerance (~1e-2 |K|) would take values
        # 1% from |alpha| for exact ones, so the count is left unknown and no value is moved
        if dtype == torch.float64:
            scale = max(float(lam.abs().max()) if lam.numel() else 0.0, alpha**2, 1.0)
            zero = lam.abs() <= 100 * math.sqrt(max(k, 1)) * torch.finfo(dtype).eps * scale
            extra = int(zero.sum())
            lam = torch.where(zero, torch.zeros_like(lam), lam)
        else:
            extra = None
            info["n_exact_ones_at_least"] = m - k
    core = torch.sqrt(torch.clamp(alpha**2 + lam, min=0))
    vals = torch.cat([core, torch.full((m - k,), abs(alpha), dtype=dtype), torch.zeros(n - m, dtype=dtype)])
    vals = torch.sort(vals, descending=True).values
    info["core_size"] = k
    timings["total"] = time.perf_counter() - t0
    return SpectrumResult(
        values=vals,
        method="exact",
        route="structured",
        dtype=dtype,
        timings=timings,
        n_exact_ones=None if extra is None else m - k + extra,
        n_zero_structural=n - m,
        alpha=alpha,
        shape=op.shape,
        info=info,
    )


def values_from_gram(lam: torch.Tensor, n_vals: int, dtype: torch.dtype) -> torch.Tensor:
    """Singular values (descending, ``n_vals`` of them) from the eigenvalues of a Gram matrix."""
    lam = torch.sort(lam, descending=True).values[:n_vals]
    s = torch.sqrt(torch.clamp(lam, min=0)).to(dtype)
    if s.numel() < n_vals:
        s = torch.cat([s, torch.zeros(n_vals - s.numel(), dtype=dtype)])
    return s


def gram_spectrum(op: UnitJacobian, dtype: torch.dtype, f: UnitFactors | None = None) -> SpectrumResult:
    """All singular values from the ``m x m`` Gram of the active rows, built from sparse factors."""
    t0 = time.perf_counter()
    f = f or unit_factors(op)
    JS = factors_js(f)
    t1 = time.perf_counter()
    n_out, n_in = op.shape
    n_vals = min(n_out, n_in)
    m = f.m
    npd = np.float64 if dtype == torch.float64 else np.float32
    # products in float64, each entry rounded once to dtype (no dense float64 copy)
    G = ((JS @ JS.T) if m <= n_in else (JS.T @ JS)).astype(npd, copy=False).toarray()
    check_finite(torch.from_numpy(G), "the Gram matrix of the active rows")
    t2 = time.perf_counter()
    lam = eigvalsh(torch.from_numpy(G), overwrite=True)
    t3 = time.perf_counter()
    vals = values_from_gram(lam, n_vals, dtype)
    return SpectrumResult(
        values=vals,
        method="exact",
        route="gram",
        dtype=dtype,
        timings={
            "factors": f.seconds,
            "rows": t1 - t0,
            "gram": t2 - t1,
            "eig": t3 - t2,
            "total": time.perf_counter() - t0,
        },
        n_zero_structural=max(0, n_vals - m),
        shape=op.shape,
        info={"m": m, "gram_size": G.shape[0]},
    )


def active_rows(op: LinearOperator) -> np.ndarray | None:
    """Indices of the rows that may be nonzero (a unit's ReLU output mask, or that of a
    composition's last unit; see :func:`~linstab.operators.output_mask`); ``None``: no zero
    rows known.
    """
    mask, _ = output_mask(op)
    return None if mask is None else torch.nonzero(mask).flatten().cpu().numpy()


def dense_rows(op: LinearOperator, rows: np.ndarray | None, dtype: torch.dtype, progress: bool = False):
    """The matrix (or its rows ``rows``) as a dense tensor in ``dtype``."""
    if rows is None:
        return op.materialize(dtype=dtype, progress=progress)
    n_out, n_in = op.shape
    if isinstance(op, UnitJacobian) and dtype != op.dtype:
        _, rmv = unit_products(op, dtype)
        cdtype = dtype
    else:
        rmv, cdtype = op.rmatmat_batch, op.dtype
    out = torch.empty((rows.size, n_in), dtype=dtype)
    bs = max(1, min(256, (1 << 23) // max(n_in, n_out)))
    for s in range(0, rows.size, bs):
        e = torch.as_tensor(rows[s : s + bs])
        E = torch.zeros((e.numel(), n_out), dtype=cdtype, device=op.device)
        E[torch.arange(e.numel()), e] = 1
        Y = rmv(E.reshape(e.numel(), *op.out_shape)).reshape(e.numel(), -1)
        out[s : s + e.numel()] = Y.to(dtype).cpu()
    return out


def dense_spectrum(
    op: LinearOperator, dtype: torch.dtype, vectors: bool, solver: str, progress: bool
) -> SpectrumResult:
    """All singular values from the Gram matrix of the smaller side (active rows only)."""
    t0 = time.perf_counter()
    n_out, n_in = op.shape
    n_vals = min(n_out, n_in)
    info: dict = {}
    if vectors:
        M = op.materialize(dtype=dtype, progress=progress).cpu()
        check_finite(M, "the dense matrix of the exact route")
        t1 = time.perf_counter()
        U, s, Vh = svd(M)
        t2 = time.perf_counter()
        return SpectrumResult(
            values=s,
            U=U,
            V=Vh.T.contiguous(),
            method="exact",
            route="dense-svd",
            dtype=dtype,
            timings={"materialize": t1 - t0, "svd": t2 - t1, "total": t2 - t0},
            shape=op.shape,
            n_zero_structural=None if active_rows(op) is None else max(0, n_vals - active_rows(op).size),
        )
    rows = active_rows(op)
    M = dense_rows(op, rows, dtype, progress).cpu()
    check_finite(M, "the dense matrix of the exact route")
    t1 = time.perf_counter()
    m = M.shape[0]
    if solver == "auto":
        solver = "svd" if min(M.shape) <= 2048 else "gram"
    if solver == "svd":
        s = svdvals(M)
        vals = s[:n_vals]
        if s.numel() < n_vals:
            vals = torch.cat([s, torch.zeros(n_vals - s.numel(), dtype=dtype)])
        route = "dense-svd"
        t2 = t3 = time.perf_counter()
    else:
        inner = max(M.shape)
        G, _ = gram(M)
        del M
        t2 = time.perf_counter()
        info["inner"] = inner
        vals = values_from_gram(eigvalsh(G, overwrite=True), n_vals, dtype)
        t3 = time.perf_counter()
        route = "dense-gram"
        info["gram_size"] = G.shape[0]
    info["rows"] = m
    return SpectrumResult(
        values=vals,
        method="exact",
        route=route,
        dtype=dtype,
        timings={"materialize": t1 - t0, "gram": t2 - t1, "eig": t3 - t2, "total": time.perf_counter() - t0},
        n_zero_structural=None if rows is None else max(0, n_vals - rows.size),
        shape=op.shape,
        info=info,
    )
