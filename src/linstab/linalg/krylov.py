"""The block Krylov solver: thick-restart block Lanczos on ``J^T J`` for the top-k or bottom-k
singular triplets, on batched operator products.
"""

from __future__ import annotations

import math
import time

import torch

from ..operators.base import LinearOperator
from .results import SpectrumResult, check_finite


def row_products(op: LinearOperator, transpose: bool):
    """Row-batched products on flat vectors: ``A(X)`` with ``X`` ``(b, n)`` and its adjoint."""
    in_shape, out_shape = (op.out_shape, op.in_shape) if transpose else (op.in_shape, op.out_shape)
    fwd, adj = (op.rmatmat_batch, op.matmat_batch) if transpose else (op.matmat_batch, op.rmatmat_batch)
    counts = {"forward": 0, "adjoint": 0}

    def A(X):
        counts["forward"] += X.shape[0]
        return fwd(X.reshape(X.shape[0], *in_shape)).reshape(X.shape[0], -1)

    def At(Y):
        counts["adjoint"] += Y.shape[0]
        return adj(Y.reshape(Y.shape[0], *out_shape)).reshape(Y.shape[0], -1)

    return A, At, counts


def _orth_against(Z: torch.Tensor, Q: torch.Tensor | None, drop_tol: float) -> torch.Tensor:
    """Rows of ``Z`` orthonormalized against the rows of ``Q`` and each other: BCGS2 (block
    classical Gram-Schmidt, one projection and a CholeskyQR per sweep, two sweeps; Barlow &
    Smoktunowicz 2013), Householder QR when Cholesky fails; rows that lie in the span of ``Q``
    to working precision are dropped after the first sweep. Each sweep reads ``Q`` twice: on
    long vectors (ImageNet units) this memory traffic, not the products, dominates a thin-block
    Krylov run, so there is no third projection.
    """
    tiny = torch.finfo(Z.dtype).tiny
    norms0 = Z.norm(dim=1).clamp_min(tiny)
    has_q = Q is not None and Q.shape[0] > 0
    X = Z
    for sweep in range(2):
        if has_q:
            X = X - (X @ Q.T) @ Q
        if sweep == 0:
            keep = X.norm(dim=1) > 10 * drop_tol * norms0
            if not bool(keep.all()):
                X = X[keep]
            if X.shape[0] == 0:
                return X
        L, info = torch.linalg.cholesky_ex(X @ X.T)
        d = L.diagonal()
        if int(info) == 0 and bool((d > math.sqrt(drop_tol) * d.max()).all()):
            eye = torch.eye(L.shape[0], dtype=L.dtype, device=L.device)
            X = torch.linalg.solve_triangular(L, eye, upper=False) @ X
        else:
            Qz, R = torch.linalg.qr(X.T)
            dr = R.diagonal().abs()
            X = Qz.T[dr > drop_tol * dr.max().clamp_min(tiny)]
            if X.shape[0] == 0:
                return X
    return X


def _block_repeat(values: torch.Tensor, block: int, atol: float) -> bool:
    """Whether the sorted ``values`` hold ``block`` or more within ``atol`` of each other: a value
    whose copies may fill every direction the Krylov space has for it (more may exist).
    """
    if block < 1 or values.numel() < block:
        return False
    v = values.sort(descending=True).values
    return bool(((v[: v.numel() - block + 1] - v[block - 1 :]) <= atol).any())


def block_krylov(
    op: LinearOperator,
    k: int,
    largest: bool,
    *,
    block: int | None,
    ncv: int | None,
    tol: float,
    max_iter: int,
    seed: int,
    vectors: bool,
    verify: bool = True,
) -> SpectrumResult:
    """Thick-restart block Lanczos on ``J^T J`` (on the smaller side).

    The basis ``Q`` (rows) grows by blocks of ``block`` vectors, ``q -> orth(J^T J q)``, up to
    ``ncv`` vectors; then the ``keep = k + block`` best Ritz vectors are kept and the next block
    is the dominant part of their residuals (which span at most ``block`` directions: the
    block analogue of thick-restart Lanczos), so every product extends the Krylov space.
    ``J q`` and ``J^T J q`` are stored for every basis vector: Ritz values, vectors and residuals
    cost no extra products. Rayleigh-Ritz uses the small Gram ``(J Q^T)^T (J Q^T)`` for the
    largest values and the SVD of ``J Q^T`` (no squaring) for the smallest.

    A Krylov space holds at most ``block`` copies of an exactly repeated value, so residuals
    below ``tol`` do not show copies it never reached (a plateau of values exactly 1 wider than
    the block). Such a value shows as ``block`` converged copies among the ``k`` values (a
    generic start block reaches ``min(block, multiplicity)`` of them): with ``verify`` (the
    default) a converged run whose ``k`` values hold ``block`` or more copies of one value
    (within ``10 tol s_max``) takes one more cycle from a fresh random block orthogonal to its
    Ritz vectors; runs without such a cluster (the top-k of trained networks' units) cost
    nothing more. When the ``k`` values stay within
    ``10 tol s_max`` the converged result is returned unchanged (values, vectors, residuals,
    ``iterations``; only the product counts grow); otherwise the values it found are kept,
    the iteration goes on and verifies again (``info["missed_repeats_found"]`` counts those
    cycles). This catches a missed copy whose value the fresh block's Krylov space resolves
    from the others within one cycle (a repeat separated from the values below it); it is
    not a proof that none is missed.
    """
    t0 = time.perf_counter()
    n_out0, n_in0 = op.shape
    transpose = n_in0 > n_out0  # iterate on the smaller side
    A, At, counts = row_products(op, transpose)
    n, n_img = min(n_out0, n_in0), (n_in0 if transpose else n_out0)
    dtype, device = op.dtype, op.device
    b = max(1, min(block or 2, n))
    keep = min(n, k + b)
    ncv = min(n, max(keep + b, ncv) if ncv is not None else max(3 * k, keep + 2 * b, 16))
    eps = torch.finfo(dtype).eps
    drop_tol = 100 * eps
    cap = ncv + b
    Qb = torch.empty((cap, n), dtype=dtype, device=device)  # basis rows q
    Yb = torch.empty((cap, n_img), dtype=dtype, device=device)  # J q
    Zb = torch.empty((cap, n), dtype=dtype, device=device)  # J^T J q
    g = torch.Generator().manual_seed(seed)
    X0 = _orth_against(torch.randn((b, n), generator=g, dtype=dtype).to(device), None, drop_tol)

    def append(W, p):
        q = W.shape[0]
        Qb[p : p + q] = W
        Yb[p : p + q] = A(W)
        Zb[p : p + q] = At(Yb[p : p + q])
        # NaN/Inf from the operator would otherwise surface as a LAPACK failure (or NaN values)
        check_finite(Yb[p : p + q], "the products J q of block-krylov")
        check_finite(Zb[p : p + q], "the products J^T J q of block-krylov")
        return p + q

    p = append(X0, 0)
    last = (0, p)
    converged, it = False, 0
    saved, missed = None, 0  # converged state under verification; verifications that found more
    while True:
        while p < ncv:
            W = _orth_against(Zb[last[0] : last[1]], Qb[:p], drop_tol)[: ncv - p]
            if W.shape[0] == 0:
                # the Krylov space is invariant (a value of multiplicity above the block size,
                # or every value it holds found): continue from fresh random directions
                # orthogonal to it, or the result would miss values and hold fewer than k
                R0 = torch.randn((b, n), generator=g, dtype=dtype).to(device)
                W = _orth_against(R0, Qb[:p], drop_tol)[: ncv - p]
            if W.shape[0] == 0:
                break
            last = (p, p + W.shape[0])
            p = append(W, p)
        it += 1
        Q, Y, Z = Qb[:p], Yb[:p], Zb[:p]
        if largest:
            H = Y @ Y.T
            theta, E = torch.linalg.eigh((H + H.T) / 2)
            order = torch.arange(theta.numel() - 1, -1, -1, device=device)[: min(keep, p)]
            E = E[:, order]
            s = torch.sqrt(theta[order].clamp_min(0))
            smax = float(s[0]) if s.numel() else 0.0
        else:
            _, s_all, Vh = torch.linalg.svd(Y.T, full_matrices=False)
            m_ = s_all.numel()
            order = torch.arange(m_ - 1, -1, -1, device=device)[: min(keep, m_)]
            E = Vh[order].T
            s = s_all[order]
            smax = float(s_all[0]) if m_ else 0.0
        V_rows = E.T @ Q
        AV = E.T @ Z  # J^T J v
        JV = E.T @ Y  # J v
        tiny = max(smax, 1e-300) * math.sqrt(eps)
        nz = s > tiny
        sdiv = torch.where(nz, s, torch.ones_like(s))
        res_sv = torch.where(nz, (AV / sdiv[:, None] - s[:, None] * V_rows).norm(dim=1), JV.norm(dim=1))
        exhausted = p >= n or last[1] == last[0]
        if saved is not None:
            # end of a verification cycle: the basis held the converged Ritz vectors and the
            # Krylov space of a fresh random block orthogonal to them. Unchanged k values: no
            # copy was missed, return the converged result as it was
            if float((s[:k] - saved[0][:k]).abs().max()) <= 10 * tol * max(smax, 1e-300):
                s, V_rows, smax, tiny, it = saved
                converged = True
                break
            # a value the converged run did not see (an exact repeat of multiplicity above the
            # block size): iterate on, then verify again
            missed += 1
            saved = None
        ok = bool((res_sv[:k] <= tol * max(smax, 1e-300)).all())
        fresh = None
        if ok and not exhausted and verify and _block_repeat(s[:k], b, 10 * tol * max(smax, 1e-300)):
            fresh = torch.randn((b, n), generator=g, dtype=dtype).to(device)
        elif ok or exhausted:
            converged = True
            break
        elif it >= max_iter:
            break
        if fresh is not None:
            # the residuals alone cannot show copies of a repeated value that the Krylov space
            # does not reach (it holds at most block-size copies of one value): one more cycle
            # from fresh random directions, compared with the converged values
            saved = (s, V_rows, smax, tiny, it)
            W = fresh
        else:
            # thick restart: keep the best Ritz vectors, continue from their residual block
            R = AV - (s**2)[:, None] * V_rows
            for _ in range(2):
                R = R - (R @ V_rows.T) @ V_rows
            lam, F_ = torch.linalg.eigh(R @ R.T)
            top = torch.arange(lam.numel() - 1, -1, -1, device=device)[:b]
            lam, F_ = lam[top], F_[:, top]
            good = lam > (drop_tol**2) * max(float(lam[0]) if lam.numel() else 0.0, 1e-300)
            W = (F_[:, good].T @ R) / torch.sqrt(lam[good])[:, None]
        kk = V_rows.shape[0]
        Qb[:kk], Yb[:kk], Zb[:kk] = V_rows, JV, AV
        p = kk
        W = _orth_against(W, Qb[:p], drop_tol) if W.shape[0] else W
        if fresh is not None and W.shape[0] == 0:
            # the kept vectors span the whole space: nothing left to miss
            s, V_rows, smax, tiny, it = saved
            converged = True
            break
        if W.shape[0] == 0:
            last = (p, p)
            continue
        last = (p, p + W.shape[0])
        p = append(W, p)
    # explicit residuals of the returned triplets (both sides, fresh products)
    Vk, sk = V_rows[:k], s[:k]
    JVk = A(Vk)
    nzk = sk > tiny
    sdivk = torch.where(nzk, sk, torch.ones_like(sk))[:, None]
    Uk = torch.where(nzk[:, None], JVk / sdivk, torch.zeros_like(JVk))
    Uk = torch.where(nzk[:, None], Uk / Uk.norm(dim=1, keepdim=True).clamp_min(1e-300), Uk)
    r1 = (JVk - sk[:, None] * Uk).norm(dim=1)
    r2 = (At(Uk) - sk[:, None] * Vk).norm(dim=1)
    resid = torch.where(nzk, torch.sqrt(r1**2 + r2**2), JVk.norm(dim=1)).detach().cpu()
    converged = converged and bool((resid <= 10 * tol * max(smax, 1e-300)).all())
    Uk_cols, Vk_cols = Uk.T.contiguous(), Vk.T.contiguous()
    if transpose:
        Uk_cols, Vk_cols = Vk_cols, Uk_cols
    values = sk.detach().clone()
    if largest and not bool(nzk.all()):
        # the Gram's eigenvalues carry an absolute error ~ eps smax^2: its zeros come out as
        # ~sqrt(eps) smax (1e-3 smax in float32), not zero; ||J v|| of their (accurate) vectors
        # gives them to ~eps smax instead
        values = torch.where(nzk, values, JVk.norm(dim=1))
        order = torch.sort(values, descending=True, stable=True).indices
        values, resid = values[order], resid[order.cpu()]
        Uk_cols, Vk_cols = Uk_cols[:, order], Vk_cols[:, order]
    if not largest:
        values = torch.flip(values, [0])
        Uk_cols, Vk_cols, resid = torch.flip(Uk_cols, [1]), torch.flip(Vk_cols, [1]), torch.flip(resid, [0])
    return SpectrumResult(
        values=values.cpu(),
        U=Uk_cols if vectors else None,
        V=Vk_cols if vectors else None,
        method="topk" if largest else "bottomk",
        route="block-krylov",
        dtype=dtype,
        converged=converged,
        iterations=it,
        residuals=resid,
        timings={"total": time.perf_counter() - t0},
        shape=op.shape,
        tol=tol,
        info={
            "block": b,
            "ncv": ncv,
            "keep": keep,
            "products": dict(counts),
            "max_iter": max_iter,
            "missed_repeats_found": missed,
        },
    )
