"""Inertia (counts of positive, negative and zero eigenvalues) of sparse, spatially banded
symmetric matrices by block ``LDL^T`` (Sylvester's law of inertia).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch


def ldl_inertia(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int], float]:
    """Bunch-Kaufman ``LDL^T`` of a dense symmetric matrix.

    Returns:
        ``(LD, pivots, (pos, neg, zero), min_abs_d)``, where ``min_abs_d`` is the smallest
        modulus of an eigenvalue of ``D`` (a conditioning proxy).
    """
    LD, piv, _ = torch.linalg.ldl_factor_ex(S)  # info > 0: an exactly zero pivot (counted)
    n = S.shape[0]
    d = LD.diagonal().clone()
    p = piv.cpu().numpy()
    eig = d.clone()
    k = 0
    two = np.nonzero(p < 0)[0]
    if two.size:
        # 2x2 blocks start where p[k] == p[k+1] < 0 (LAPACK lower convention)
        starts = []
        while k < n:
            if p[k] < 0:
                starts.append(k)
                k += 2
            else:
                k += 1
        st = torch.as_tensor(starts, dtype=torch.long)
        a, c = d[st], d[st + 1]
        b = LD[st + 1, st]
        mean = (a + c) / 2
        rad = torch.sqrt(((a - c) / 2) ** 2 + b**2)
        eig[st] = mean + rad
        eig[st + 1] = mean - rad
    pos = int((eig > 0).sum())
    neg = int((eig < 0).sum())
    zero = n - pos - neg
    mind = float(eig.abs().min()) if n else math.inf
    return LD, piv, (pos, neg, zero), mind


def partition(pattern: sp.csr_matrix, min_block: int) -> list[int]:
    """Block boundaries that make a symmetric pattern block tridiagonal.

    Greedy: each block is at least ``min_block`` long (except the last) and the next block
    reaches past the farthest column any row of the current block touches.
    """
    n = pattern.shape[0]
    if n == 0:
        return [0]
    pattern = (abs(pattern) + sp.identity(n, format="csr")).tocsr()  # no empty rows
    far = np.maximum.reduceat(pattern.indices, pattern.indptr[:-1])
    bounds = [0]
    s, e = 0, min(n, min_block)
    while e < n:
        reach = int(far[s:e].max()) + 1
        e2 = min(n, max(reach, e + min_block))
        bounds.append(e)
        s, e = e, e2
    bounds.append(n)
    return bounds


def block_inertia(
    N: sp.csr_matrix, bounds: list[int], rcond: float = 1e-7, max_block: int = 3072
) -> tuple[int, int, int]:
    """Inertia ``(pos, neg, zero)`` of a symmetric block-tridiagonal sparse matrix.

    Block ``LDL^T`` by Haynsworth's inertia additivity: ``In(N) = In(S_1) + In(S_2) + ...`` with
    Schur complements ``S_{j+1} = N_{j+1,j+1} - N_{j+1,j} S_j^{-1} N_{j,j+1}``; each ``S_j`` is
    factored by Bunch-Kaufman ``LDL^T``. A pivot block whose ``D`` has an eigenvalue below
    ``rcond * |N|`` is merged with the next block instead of being inverted (so no
    ill-conditioned block is ever inverted); when a merged block would exceed ``max_block``, the
    whole remaining matrix is factored at once (one dense ``LDL^T``). Computed in float64.
    """
    n = N.shape[0]
    if n == 0:
        return 0, 0, 0
    scale = float(abs(N).sum(axis=1).max()) or 1.0
    nb = len(bounds) - 1
    pos = neg = zero = 0
    start, end, j = bounds[0], bounds[1], 1
    S = torch.from_numpy(N[start:end, start:end].toarray())
    while True:
        if end >= n:
            _, _, (p, q, z), _ = ldl_inertia(S)
            return pos + p, neg + q, zero + z
        nxt = bounds[j + 1] if j + 1 <= nb else n
        _, _, (p, q, z), mind = ldl_inertia(S)
        B = torch.from_numpy(N[start:end, end:nxt].toarray())
        C = torch.from_numpy(N[end:nxt, end:nxt].toarray())
        if mind < rcond * scale or z > 0:
            if S.shape[0] + (nxt - end) > max_block:  # finish with one dense factorization
                B = torch.from_numpy(N[start:end, end:n].toarray())
                C = torch.from_numpy(N[end:n, end:n].toarray())
                S = torch.cat([torch.cat([S, B], 1), torch.cat([B.T, C], 1)], 0)
                _, _, (p, q, z), _ = ldl_inertia(S)
                return pos + p, neg + q, zero + z
            S = torch.cat([torch.cat([S, B], 1), torch.cat([B.T, C], 1)], 0)
            end, j = nxt, j + 1
            continue
        pos, neg, zero = pos + p, neg + q, zero + z
        X = torch.linalg.solve(S, B)  # LU solve: BLAS-3, unlike LAPACK's sytrs
        S = C - B.T @ X
        S = (S + S.T) / 2
        start, end, j = end, nxt, j + 1


def block_is_pd(N: sp.csr_matrix, bounds: list[int], delta: float) -> bool:
    """Whether ``N - delta I`` is positive definite (block Cholesky of a block-tridiagonal
    sparse matrix; stable without pivoting for definite matrices).
    """
    n = N.shape[0]
    start, end, j = bounds[0], bounds[1], 1
    S = torch.from_numpy(N[start:end, start:end].toarray())
    while True:
        S = S - delta * torch.eye(S.shape[0], dtype=S.dtype)
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0:
            return False
        if end >= n:
            return True
        nxt = bounds[j + 1] if j + 1 < len(bounds) else n
        B = torch.from_numpy(N[start:end, end:nxt].toarray())
        X = torch.linalg.solve_triangular(L, B, upper=False)
        S = torch.from_numpy(N[end:nxt, end:nxt].toarray()) - X.T @ X
        S = (S + S.T) / 2
        start, end, j = end, nxt, j + 1
