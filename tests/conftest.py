"""Shared fixtures (the factories they use live in ``factories.py``)."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per xdist worker (``make test`` runs one worker per core) also in the BLAS and
    # LAPACK of NumPy/SciPy (OpenBLAS reads these when it loads, below): with its own thread per
    # core in each worker, SLQ's many small tridiagonal eigenproblems took twice as long (61 s vs
    # 34 s for tests/cli/test_cli_imagenet.py's report with two workers, measured 2026-12-02)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import pytest
import torch
from factories import NET_KINDS, all_nets, make_net, weights_dir

import linstab

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker (``make test`` runs one worker per core): threads of two
    # workers competing for the same cores make every test slower than running them in turn
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The slow tests first (stable otherwise): pytest-xdist hands out test files in this order, so
    the long end-to-end files start first and the fast ones fill in around them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The shared akamaster weights (``LINSTAB_WEIGHTS_DIR``); skips with a reason if absent."""
    d = weights_dir()
    if d is None:
        reason = "needs LINSTAB_WEIGHTS_DIR pointing at ../shared/weights (akamaster files)"
        if os.environ.get("LINSTAB_REQUIRE_WEIGHTS") == "1":
            pytest.fail(reason + " (LINSTAB_REQUIRE_WEIGHTS=1: skipping is not allowed)")
        pytest.skip(reason)
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests, restored afterwards: tiny networks and small
    dense kernels run far faster without OpenMP synchronisation on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(params=NET_KINDS)
def tiny_net(request) -> linstab.Network:
    """Every tiny network kind, seeded."""
    if request.param == "pytorchcv":
        pytest.importorskip("pytorchcv")
    return make_net(request.param, seed=NET_KINDS.index(request.param))


@pytest.fixture(scope="module")
def nets() -> dict[str, linstab.Network]:
    """One seeded tiny network of every kind, shared by a test module."""
    return all_nets()
