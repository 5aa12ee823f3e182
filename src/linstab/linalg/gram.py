"""``gram``: the Gram matrix ``M M^T`` or ``M^T M`` of a dense matrix by BLAS ``syrk`` (half the
work of a general product; only the lower triangle is formed, which is all the symmetric
eigensolvers of :mod:`linstab.linalg.eigh` read).
"""

from __future__ import annotations

import numpy as np
import torch

from .eigh import openblas_threads


def gram(M: torch.Tensor, side: str = "auto") -> tuple[torch.Tensor, bool]:
    """The Gram matrix of ``M`` (``(m, n)``, float32 or float64).

    Args:
        M: a dense matrix.
        side: ``"rows"`` (``M M^T``, ``(m, m)``), ``"cols"`` (``M^T M``, ``(n, n)``) or
            ``"auto"`` (the smaller one).

    Returns:
        ``(G, lower_only)``: on the CPU ``G`` is column-major with only its lower triangle
        formed (``lower_only=True``; pass it to :func:`~linstab.linalg.eigh.eigvalsh`, which reads
        that triangle); elsewhere (CUDA, other dtypes) a full symmetric ``G`` from a matrix
        product (``lower_only=False``).
    """
    if side not in ("auto", "rows", "cols"):
        raise ValueError(f"side must be 'auto', 'rows' or 'cols', got {side!r}")
    if M.ndim != 2:
        raise ValueError(f"M must be a matrix, got shape {tuple(M.shape)}")
    m, n = M.shape
    rows = side == "rows" or (side == "auto" and m <= n)
    if M.device.type != "cpu" or M.dtype not in (torch.float32, torch.float64) or M.requires_grad:
        G = M @ M.T if rows else M.T @ M
        return G, False
    from scipy.linalg import blas

    syrk = blas.ssyrk if M.dtype == torch.float32 else blas.dsyrk
    a = M.contiguous().numpy()
    # a C-order (m, n) array is a Fortran-order (n, m) array A = M^T: M M^T = A^T A (trans=1),
    # M^T M = A A^T (trans=0); no copy of M
    with openblas_threads():
        C = syrk(1.0, a.T, trans=1 if rows else 0, lower=1)
    return torch.from_numpy(np.asfortranarray(C)), True
