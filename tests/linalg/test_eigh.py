"""In-place LAPACK eigensolvers and OpenBLAS thread control (linstab.linalg.eigh)."""

from __future__ import annotations

import pytest
import torch

from linstab.linalg import eigh

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def test_openblas_threads_follow_torch(monkeypatch):
    """Dense SciPy kernels run with torch's thread count (or LINSTAB_BLAS_THREADS), then restore."""
    fns = eigh.load_2stage()
    if not fns or "threads" not in fns:
        pytest.skip("SciPy's OpenBLAS thread control not found")
    get, put = fns["threads"]
    before, torch_threads = get(), torch.get_num_threads()
    if before < 2 and put(2) is None and get() < 2:
        pytest.skip("OpenBLAS was built for one thread")
    try:
        put(1)
        torch.set_num_threads(2)
        with eigh.openblas_threads():
            assert get() == 2  # torch's setting, not a fixed single thread
        assert get() == 1
        torch.set_num_threads(1)
        put(2)
        with eigh.openblas_threads():
            assert get() == 1
        assert get() == 2
        monkeypatch.setenv("LINSTAB_BLAS_THREADS", "2")
        put(1)
        with eigh.openblas_threads():
            assert get() == 2
        assert get() == 1
    finally:
        put(before)
        torch.set_num_threads(torch_threads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_eigvalsh_in_place_matches_torch(dtype, layout):
    """``_eigvalsh(A, overwrite=True)`` (MKL ``syevd`` in place where torch exports it) reads the
    lower triangle like ``torch.linalg.eigvalsh`` and returns the same values, in either layout."""
    g = torch.Generator().manual_seed(7)
    A = torch.randn((150, 150), generator=g, dtype=torch.float64)  # not symmetric: lower is read
    ref = torch.linalg.eigvalsh(A).to(dtype)
    B = A.to(dtype).clone() if layout == "row-major" else A.to(dtype).mT.contiguous().mT
    assert B.is_contiguous() == (layout == "row-major")
    w = eigh.eigvalsh(B, overwrite=True)
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    assert w.dtype == dtype and w.shape == (150,)
    assert bool((w[1:] >= w[:-1]).all())
    assert (w - ref).abs().max() <= tol * ref.abs().max()
    if eigh.load_mkl_syevd() is not None:  # the in-place path ran: A was overwritten
        assert not torch.equal(B, A.to(dtype) if layout == "row-major" else A.to(dtype))
    # without overwrite the input is left alone
    C = A.to(dtype).clone()
    eigh.eigvalsh(C)
    assert torch.equal(C, A.to(dtype))
