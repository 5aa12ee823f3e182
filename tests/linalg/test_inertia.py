"""Inertia counting by block LDL^T (linstab.linalg.inertia) against dense eigenvalues."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from linstab.linalg import inertia

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


@pytest.mark.parametrize("seed", range(4))
def test_block_inertia_matches_eigenvalues(seed):
    rng = np.random.default_rng(seed)
    n, bw = 400, 12
    A = sp.random(n, n, density=0.05, random_state=rng, format="csr")
    A = sp.triu(A, -bw).tocsr()
    A = sp.tril(A, bw).tocsr()
    A = (A + A.T + sp.diags(rng.standard_normal(n))).tocsr()
    ev = torch.linalg.eigvalsh(torch.from_numpy(A.toarray())).numpy()
    # a shift onto an eigenvalue of the leading block makes its pivot block singular: merge path
    lead = torch.linalg.eigvalsh(torch.from_numpy(A[:40, :40].toarray())).numpy()
    for shift in (0.01, ev[n // 3] + 1e-3, lead[5]):
        N = (A - shift * sp.identity(n)).tocsr()
        bounds = inertia.partition(N, 40)
        assert len(bounds) > 3
        p, q, z = inertia.block_inertia(N, bounds)
        assert (p, q) == (int((ev > shift + 1e-9).sum()), int((ev < shift - 1e-9).sum()))
        assert p + q + z == n
