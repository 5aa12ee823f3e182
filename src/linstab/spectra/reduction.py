"""The identity-shortcut reduction ``J_S J_S^T = alpha^2 I_m + Q M Q^T`` of a masked unit and its
banded ``2r x 2r`` core ``K = L^T M L``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..linalg.eigh import openblas_threads
from ..operators.factors import UnitFactors


@dataclass
class Reduction:
    """The identity-shortcut reduction: ``J_S J_S^T = alpha^2 I_m + Q M Q^T``."""

    m: int
    n: int
    r: int
    alpha: float
    G11: sp.csr_matrix  # U_S^T U_S
    G12: sp.csr_matrix  # U_S^T (W^T)_S
    G22: sp.csr_matrix  # (W^T)_S^T (W^T)_S
    A: sp.csr_matrix  # W W^T
    keys: np.ndarray  # spatial key per inner unit (r,)
    dropped: int  # inner units whose U_S column vanishes (they drop out entirely)
    seconds: float


def reduce_unit(f: UnitFactors) -> Reduction:
    """The identity-shortcut reduction of a unit's sparse factors."""
    t0 = time.perf_counter()
    S = f.out_active
    US = f.U.tocsr()[S].tocsc()
    WtS = f.Wt.tocsr()[S].tocsc()
    keep = np.asarray(abs(US).sum(axis=0)).ravel() > 0
    US, WtS, Wt = US[:, keep], WtS[:, keep], f.Wt[:, keep]
    USt = US.T.tocsr()
    G11 = (USt @ US).tocsr()
    G12 = (USt @ WtS).tocsr()
    G22 = (WtS.T.tocsr() @ WtS).tocsr()
    A = (Wt.T.tocsr() @ Wt).tocsr()
    return Reduction(
        m=f.m,
        n=f.n_out,
        r=int(keep.sum()),
        alpha=f.alpha,
        G11=G11,
        G12=G12,
        G22=G22,
        A=A,
        keys=f.inner_keys[keep],
        dropped=int((~keep).sum()),
        seconds=time.perf_counter() - t0,
    )


def rank_tol(G: sp.csr_matrix) -> float:
    """Tolerance below which a pivot of ``G`` counts as zero."""
    norm = float(abs(G).sum(axis=1).max()) if G.nnz else 0.0
    return max(G.shape[0], 1) * np.finfo(np.float64).eps * max(norm, 1e-300) * 10


def core_matrices(red: Reduction, keepw: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``G = Q^T Q`` and ``M = [[W W^T, alpha E], [alpha E^T, 0]]`` (sparse, ``k x k``), ``Q``
    without its vanishing ``(W^T)_S`` columns (``E``: the kept columns of the identity).
    """
    G12k = red.G12[:, keepw]
    G = sp.bmat([[red.G11, G12k], [G12k.T, red.G22[keepw][:, keepw]]], format="csr")
    E = sp.identity(red.r, format="csr")[:, keepw]
    M = sp.bmat([[red.A, red.alpha * E], [red.alpha * E.T, None]], format="csr")
    return G, M


def banded_core(
    red: Reduction, keepw: np.ndarray, dtype: torch.dtype, timings: dict, min_block: int = 256
) -> tuple[torch.Tensor | None, tuple[int, int]]:
    """The core ``K = L^T M L`` (``k x k``, ``k = r + rw``) from a banded Cholesky ``G = L L^T``.

    ``G = Q^T Q`` and ``M`` couple only unknowns whose kernels overlap, so in spatial order
    (``red.keys``) both are banded, with bandwidths ``bw`` and ``bwm`` of a few image rows.
    ``L`` then has ``G``'s band (LAPACK ``pbtrf``, no fill outside it), and with blocks of size
    ``b >= max(bw, bwm)`` it is block lower bidiagonal and ``M`` block tridiagonal, so
    ``K`` is block pentadiagonal: ``M L`` costs one sparse product per block column and
    ``K_ij = L_ii^T (ML)_ij + L_{i+1,i}^T (ML)_{i+1,j}`` two dense products per nonzero block.
    The eigenvalues of ``K`` do not depend on the order of the unknowns, so ``K`` stays in
    spatial order.

    ``min_block`` is the smallest block size (large enough for efficient dense products; the
    tests use a small one to exercise many blocks).

    Returns:
        ``(K, (bw, b))`` with ``K`` dense and symmetric, or ``(None, (bw, b))`` when ``G`` is not
        numerically positive definite (rank-deficient ``Q``). ``timings`` gains ``gram``,
        ``cholesky`` and ``core`` (seconds).
    """
    from scipy.linalg import LinAlgError, cholesky_banded, get_blas_funcs

    t0 = time.perf_counter()
    npd = np.float64 if dtype == torch.float64 else np.float32
    G, M = core_matrices(red, keepw)
    k = G.shape[0]
    perm = np.argsort(np.concatenate([red.keys, red.keys[keepw]]), kind="stable")
    Gp = G[perm][:, perm].tocoo()
    Mp = M[perm][:, perm].tocsc().astype(npd)
    lower = Gp.row >= Gp.col
    off, col = (Gp.row - Gp.col)[lower], Gp.col[lower]
    bw = int(off.max()) if off.size else 0
    mc = Mp.tocoo()
    bwm = int(np.abs(mc.row - mc.col).max()) if mc.nnz else 0
    b = max(min(max(bw, bwm, min_block), k), 1)
    ab = np.zeros((bw + 1, k), dtype=npd)  # LAPACK lower band storage: ab[i - j, j] = G[i, j]
    ab[off, col] = Gp.data[lower]
    del Gp
    t1 = time.perf_counter()
    timings["gram"] = t1 - t0
    try:
        with openblas_threads():
            Lb = cholesky_banded(ab, lower=True, overwrite_ab=True, check_finite=False)
    except LinAlgError:
        timings["cholesky"] = time.perf_counter() - t1
        return None, (bw, b)
    t2 = time.perf_counter()
    timings["cholesky"] = t2 - t1
    nb = -(-k // b)
    lo = [i * b for i in range(nb + 1)]
    lo[-1] = k

    def l_col(j: int) -> np.ndarray:
        """Rows ``lo[j] : lo[j + 2]`` of block column ``j`` of ``L``, dense, C order."""
        c0, c1, r1 = lo[j], lo[j + 1], lo[min(j + 2, nb)]
        w = c1 - c0
        buf = np.zeros(max(w + bw + 1, r1 - c0) * w, dtype=npd)
        # entry (c + d, c) of a (., w) C-order array sits at d * w + c * (w + 1): write the band
        # rows Lb[d, c0 + c] along those diagonals through a strided view (no two coincide)
        diag = np.lib.stride_tricks.as_strided(
            buf, shape=(bw + 1, w), strides=(w * buf.itemsize, (w + 1) * buf.itemsize)
        )
        diag[...] = Lb[:, c0:c1]
        return buf.reshape(-1, w)[: r1 - c0]

    trmm = get_blas_funcs("trmm", (Lb,))
    K = torch.zeros((k, k), dtype=dtype)  # torch: blocked (fast) transposing copies into it
    Lt: dict[tuple[int, int], np.ndarray] = {}  # L_qi^T, Fortran order (views of C-order blocks)
    ML: dict[tuple[int, int], np.ndarray] = {}  # (M L)_qj, Fortran order
    with openblas_threads():
        for j in range(nb):
            Lc = l_col(j)
            c0, c1, c2 = lo[j], lo[j + 1], lo[min(j + 2, nb)]
            Lt[(j, j)] = Lc[: c1 - c0].T  # upper triangular
            if j + 1 < nb:
                Lt[(j + 1, j)] = Lc[c1 - c0 :].T  # lower triangular (b >= bw), maybe not square
            r0, r1 = lo[max(j - 1, 0)], lo[min(j + 3, nb)]
            P = np.asarray(Mp[:, c0:c2].tocsr()[r0:r1] @ Lc)  # (M L) rows r0:r1, block column j
            for i in range(max(j - 1, 0), min(j + 3, nb)):
                ML[(i, j)] = np.asfortranarray(P[lo[i] - r0 : lo[i + 1] - r0])
            # block column j of K above and on the diagonal: K_ij = sum_q L_qi^T (M L)_qj
            for i in range(max(j - 2, 0), j + 1):
                acc = None
                for q in (i, i + 1):
                    if (q, i) not in Lt or (q, j) not in ML:
                        continue
                    a, x = Lt[(q, i)], ML[(q, j)]
                    if a.shape[0] == a.shape[1]:
                        t = trmm(1.0, a, x, lower=int(q != i))
                    else:
                        t = a @ x
                    acc = t if acc is None else acc + t
                if acc is None:
                    continue
                acc = torch.from_numpy(acc)
                if i == j:
                    acc = (acc + acc.T) / 2
                K[lo[i] : lo[i + 1], lo[j] : lo[j + 1]] = acc
                K[lo[j] : lo[j + 1], lo[i] : lo[i + 1]] = acc.T
            ML.clear()  # (M L) of block column j serves column j of K only
            Lt.pop((j - 2, j - 2), None)  # column j + 1 of K starts at block row j - 1
            Lt.pop((j - 1, j - 2), None)
    timings["core"] = time.perf_counter() - t2
    return K, (bw, b)


def factors_js(f: UnitFactors) -> sp.csr_matrix:
    """The active rows ``J_S = E_S^T (alpha S + U W)`` as a sparse ``(m, n_in)`` matrix."""
    S = f.out_active
    US = f.U.tocsr()[S]
    JS = US @ f.Wt.T.tocsr()
    if f.skip is None:
        P = sp.csr_matrix((np.ones(S.size), (np.arange(S.size), S)), shape=(S.size, f.n_in))
    else:
        P = f.skip[S]
    return (JS + f.alpha * P).tocsr()
