"""linstab.linalg.dense_svd: the same factorization as torch.linalg.svd in either orientation."""

from __future__ import annotations

import pytest
import torch

from linstab.linalg import svd, svdvals


@pytest.mark.parametrize("shape", [(7, 30), (30, 7), (12, 12), (1, 9), (9, 1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_svd_and_svdvals_match_torch_in_both_orientations(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    M = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    p = min(shape)
    U, s, Vh = svd(M)
    assert U.shape == (shape[0], p) and s.shape == (p,) and Vh.shape == (p, shape[1])
    ref = torch.linalg.svdvals(M.double())
    assert torch.allclose(s.double(), ref, atol=tol * float(ref[0]))
    assert torch.allclose(svdvals(M).double(), ref, atol=tol * float(ref[0]))
    assert bool((s[:-1] >= s[1:]).all())
    # a factorization of M with orthonormal factors
    assert torch.allclose((U * s) @ Vh, M, atol=10 * tol * float(ref[0]))
    eye = torch.eye(p, dtype=dtype)
    assert torch.allclose(U.mT @ U, eye, atol=10 * tol) and torch.allclose(Vh @ Vh.mT, eye, atol=10 * tol)


def test_a_rank_deficient_wide_matrix_keeps_its_zero_values():
    g = torch.Generator().manual_seed(0)
    A, B = (torch.randn(shape, generator=g, dtype=torch.float64) for shape in ((4, 2), (2, 11)))
    M = A @ B
    s = svdvals(M)
    assert s.shape == (4,) and float(s[2:].abs().max()) < 1e-12 < float(s[1])
