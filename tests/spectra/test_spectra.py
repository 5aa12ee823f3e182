"""Singular-value spectra, band counts and figures (linstab.spectra) against dense float64 SVD.

Fast tier: tiny seeded networks of every unit kind (conftest) and hand-made units. Heavy tier
(``-m heavy``, ``make test-heavy``, not in CI; needs ``LINSTAB_WEIGHTS_DIR``): real stage-3 units
of ResNet-56 (n = 4096) against LAPACK.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from factories import (
    NET_KINDS,
    dense,
    dense_counts,
    dense_sv,
    make_net,
    make_unit,
    n_alpha,
    tiny_image,
)
from torch import nn

import linstab
from linstab import spectra as S
from linstab.operators import DenseOperator
from linstab.spectra import exact, reduction
from linstab.spectra.accuracy import value_error

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


# --------------------------------------------------------------------------------------------
# sparse factors
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# exact spectra and band counts against dense SVD
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", NET_KINDS)
def test_exact_and_bands_match_dense_svd(nets, kind):
    if kind not in nets:
        pytest.skip("pytorchcv not installed")
    net = nets[kind]
    lin = net.linearize(tiny_image(1), dtype=F64)
    routes = set()
    for u in net.units:
        op = lin.unit(u.stage, u.index)
        sd = dense_sv(op)
        res = S.spectrum(op, "exact")
        routes.add(res.route)
        assert res.values.shape == sd.shape
        assert torch.all(res.values[:-1] >= res.values[1:])
        assert (res.values - sd).abs().max() < 1e-8, (u.address, res.route)
        if res.n_exact_ones is not None:
            assert res.n_exact_ones == n_alpha(sd), u.address
        if res.n_zero_structural is not None:
            assert int((sd < 1e-12).sum()) >= res.n_zero_structural
        bc = S.bands(op)
        assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(sd, min(op.shape)), u.address
        if bc.n_exact_ones is not None:
            assert bc.n_exact_ones == n_alpha(sd)
        assert abs(sum(bc.fractions[k] for k in ("above", "plateau", "below", "zero")) - 1) < 1e-12
        if u.kind != "regular":
            assert bc.route == "inertia-gram"
        else:
            assert bc.route == "inertia-structured"
            gram = S.bands(op, route="gram")
            assert gram.counts == bc.counts
    assert routes <= {"structured", "gram"}


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_structured_route_plateau_at_alpha(alpha):
    op = make_unit(alpha=alpha, c=4, hw=7, shift=-0.6, seed=2)
    sd = dense_sv(op)
    res = S.spectrum(op, "exact", route="structured")
    assert res.route == "structured" and res.alpha == alpha
    f = S.unit_factors(op)
    assert 2 * f.r < f.m  # the reduction is smaller than the active rows
    assert (res.values - sd).abs().max() < 1e-10
    assert res.n_exact_ones == n_alpha(sd, alpha) >= f.m - 2 * f.r
    assert res.n_zero_structural == op.shape[0] - f.m
    for lo, hi in [(0.99 * alpha, 1.01 * alpha), (0.5 * alpha, 1.3 * alpha)]:
        bc = S.bands(op, (lo, hi))
        assert bc.route == "inertia-structured"
        assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(sd, op.shape[0], lo, hi)
        assert bc.n_exact_ones == res.n_exact_ones
    # thresholds exactly at |alpha|: the exact plateau values count as inside [lo, hi]
    snapped = torch.where((sd - abs(alpha)).abs() < 1e-9, torch.full_like(sd, abs(alpha)), sd)
    for lo, hi in [(abs(alpha), 1.5 * abs(alpha)), (0.5 * abs(alpha), abs(alpha))]:
        bc = S.bands(op, (lo, hi))
        assert bc.route == "inertia-structured"
        assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(snapped, op.shape[0], lo, hi)


def test_structured_float32_close():
    op = make_unit(c=4, hw=7, shift=-0.6, seed=2)
    sd = dense_sv(op)
    res = S.spectrum(op, "exact", dtype=torch.float32)
    assert res.dtype == torch.float32 and res.values.dtype == torch.float32
    assert (res.values.double() - sd).abs().max() < 1e-4


@pytest.mark.parametrize("alpha,shift", [(0.0, -0.6), (-0.5, -1.0)], ids=["alpha0", "alpha-0.5"])
def test_structured_route_zero_and_negative_alpha(alpha, shift):
    """alpha = 0 (plateau at 0, on top of the structural zeros) and a negative skip scale."""
    op = make_unit(alpha=alpha, c=4, hw=7, shift=shift, seed=2)
    f = S.unit_factors(op)
    assert 0 < 2 * f.r < f.m
    sd = dense_sv(op)
    res = S.spectrum(op, "exact", route="structured")
    assert res.route == "structured" and res.info["reduction"] in ("cholesky", "pivoted-cholesky")
    assert (res.values - sd).abs().max() < 1e-10
    assert res.n_zero_structural == op.shape[0] - f.m
    if alpha == 0:
        assert res.n_exact_ones + res.n_zero_structural == n_alpha(sd, 0.0)
    else:
        assert res.n_exact_ones == n_alpha(sd, alpha) >= f.m - 2 * f.r


@pytest.mark.parametrize("alpha,extra", [(1.0, 0), (0.7, 0), (1.0, 9)], ids=["a1", "a0.7", "a1-wide"])
def test_banded_core_many_blocks_equals_one_block(alpha, extra):
    """The block-pentadiagonal assembly of K = L^T M L (spatial order, banded Cholesky) with many
    small blocks equals the single-block (dense) product, and its eigenvalues give the dense
    spectrum."""
    op = make_unit(alpha=alpha, c=4, hw=12, shift=0.0, seed=3)
    f = S.unit_factors(op)
    red = reduction.reduce_unit(f)
    keepw = np.asarray(abs(red.G22).sum(axis=0)).ravel() > 0
    K1, (bw, b1) = reduction.banded_core(red, keepw, F64, {}, min_block=10**9)
    tim = {}
    _, (_, b0) = reduction.banded_core(red, keepw, F64, {}, min_block=1)  # b0 = max(bandwidths)
    # extra > 0: blocks wider than the bandwidth (off-diagonal L blocks not full triangles)
    Kb, (bw2, b) = reduction.banded_core(red, keepw, F64, tim, min_block=b0 + extra)
    assert b == b0 + extra
    k = K1.shape[0]
    assert b1 == k and bw2 == bw and b < k / 3  # at least four blocks
    assert set(tim) == {"gram", "cholesky", "core"}
    assert torch.equal(Kb, Kb.T) and torch.equal(K1, K1.T)
    assert (Kb - K1).abs().max() <= 1e-12 * K1.abs().max()
    # outside the block pentadiagonal band K is exactly zero
    i = torch.arange(k)
    far = (i[:, None] // b - i[None, :] // b).abs() > 2
    assert bool((Kb[far] == 0).all())
    lam = torch.linalg.eigvalsh(Kb)
    core = torch.sqrt(torch.clamp(alpha**2 + lam, min=0))
    plateau = torch.full((red.m - k,), alpha, dtype=F64)
    vals = torch.cat([core, plateau, torch.zeros(red.n - red.m, dtype=F64)])
    sd = dense_sv(op)
    assert (vals.sort(descending=True).values - sd).abs().max() < 1e-10


def test_rank_deficient_reduction_uses_pivoted_cholesky():
    op = make_unit(c=4, hw=7, shift=-0.2, seed=5, dependent=True)
    f = S.unit_factors(op)
    sd = dense_sv(op)
    res = S.spectrum(op, "exact", route="structured")
    assert res.info["reduction"] == "pivoted-cholesky"
    assert res.info["core_size"] < 2 * f.r
    assert (res.values - sd).abs().max() < 1e-9
    assert res.n_exact_ones == n_alpha(sd)
    bc = S.bands(op)
    assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(sd, op.shape[0])
    assert bc.n_exact_ones == res.n_exact_ones


def test_rank_deficient_float32_moves_no_value_and_counts_no_exact_ones():
    """In float32 the core's near-zero eigenvalues are not set to zero (a rounding tolerance of
    ~1e-2 |K| took values 1% from |alpha| for exact ones on a trained ResNet-56 unit): the
    values stay within their stated bound and the exact-ones count is unknown."""
    op = make_unit(c=4, hw=7, shift=-0.2, seed=5, dependent=True)
    sd = dense_sv(op)
    res = S.spectrum(op, "exact", route="structured", dtype=torch.float32)
    assert res.info["reduction"] == "pivoted-cholesky"
    assert res.n_exact_ones is None
    assert res.info["n_exact_ones_at_least"] == res.info["m"] - res.info["core_size"] <= n_alpha(sd)
    assert bool(((res.values.double() - sd).abs() <= value_error(res)).all())


def test_rank_deficient_auto_route_takes_the_cheaper_gram(monkeypatch):
    """route="auto" on a rank-deficient reduction: the m x m Gram when m <= 1.25 k (same values,
    no exact-ones count, its structural lower bound in info); the pivoted core otherwise;
    route="structured" and the band counts' exact_ones always count through the pivoted core."""
    op = make_unit(c=4, hw=7, shift=-0.2, seed=5, dependent=True)
    sd = dense_sv(op)
    piv = S.spectrum(op, "exact", route="structured")
    m = piv.info["m"]
    monkeypatch.setattr(exact, "GRAM_OVER_PIVOTED", 10.0)
    res = S.spectrum(op, "exact")
    assert res.route == "gram" and res.info["reduction"] == "gram (rank-deficient Q)"
    assert res.n_exact_ones is None and res.alpha == piv.alpha
    assert res.info["n_exact_ones_at_least"] == m - res.info["core_size"] <= piv.n_exact_ones
    assert (res.values - sd).abs().max() < 1e-9
    res32 = S.spectrum(op, "exact", dtype=torch.float32)
    assert res32.route == "gram" and (res32.values.double() - sd).abs().max() < 1e-4
    assert S.spectrum(op, "exact", route="structured").info["reduction"] == "pivoted-cholesky"
    assert S.bands(op).n_exact_ones == piv.n_exact_ones == n_alpha(sd)
    monkeypatch.setattr(exact, "GRAM_OVER_PIVOTED", 0.0)  # the Gram is never cheaper
    res = S.spectrum(op, "exact")
    assert res.route == "structured" and res.info["reduction"] == "pivoted-cholesky"
    assert res.n_exact_ones == n_alpha(sd)


def test_non_relu_falls_back_to_dense():
    op = make_unit(act=nn.Softplus, c=3, hw=5)
    assert S.unit_factors(op) is None
    sd = dense_sv(op)
    res = S.spectrum(op, "exact")
    assert res.route.startswith("dense") and res.n_exact_ones is None
    assert "not a 0/1 mask" in res.info["why_not_structured"]
    assert (res.values - sd).abs().max() < 1e-10
    bc = S.bands(op)
    assert bc.route.startswith("spectrum-dense")
    assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(sd, op.shape[0])
    with pytest.raises(ValueError, match="no structured reduction"):
        S.spectrum(op, "exact", route="structured")


def test_dense_routes_agree(nets):
    lin = nets["option-B"].linearize(tiny_image(2), dtype=F64)
    op = lin.unit(2, 1)
    sd = dense_sv(op)
    for kw in (
        dict(route="dense", dense_solver="svd"),
        dict(route="dense", dense_solver="gram"),
        dict(route="gram"),
    ):
        res = S.spectrum(op, "exact", **kw)
        tol = 1e-8 if kw.get("dense_solver") != "gram" and kw.get("route") != "gram" else 1e-6
        assert (res.values - sd).abs().max() < tol, kw


def test_stage_and_network_exact(nets):
    net = nets["akamaster"]
    lin = net.linearize(tiny_image(4), dtype=F64)
    for op in (lin.stage(1), lin.stage(2), lin.network()):
        sd = dense_sv(op)
        res = S.spectrum(op, "exact")
        assert res.route.startswith("dense")
        assert (res.values - sd).abs().max() < 1e-8
        # only the rows the last unit's ReLU leaves active are materialized
        m = int((op.ops[0].out_deriv != 0).sum())
        assert res.info["rows"] == m < op.shape[0]
        assert res.n_zero_structural == max(0, min(op.shape) - m)
        bc = S.bands(op)
        assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(sd, min(op.shape))


def test_exact_with_vectors_is_an_svd(nets):
    lin = nets["tv-basic"].linearize(tiny_image(0), dtype=F64)
    op = lin.unit(2, 1)
    res = S.spectrum(op, "exact", vectors=True)
    M = dense(op)
    assert res.U.shape == (op.shape[0], min(op.shape)) and res.V.shape == (op.shape[1], min(op.shape))
    assert torch.allclose(M @ res.V, res.U * res.values, atol=1e-12)
    assert torch.allclose(res.V.T @ res.V, torch.eye(res.V.shape[1], dtype=F64), atol=1e-12)


# --------------------------------------------------------------------------------------------
# block inertia
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# iterative methods
# --------------------------------------------------------------------------------------------
def _check_triplets(res, op, largest: bool, tol_val=1e-8):
    M = dense(op)
    U, s, Vh = torch.linalg.svd(M)
    k = res.k
    ref = s[:k] if largest else s[-k:]
    assert (res.values - ref).abs().max() < tol_val
    assert res.converged
    assert res.residuals.shape == (k,)
    assert float(res.residuals.max()) <= 10 * res.tol * float(s[0]) + 1e-12
    if largest and res.V is not None:
        # vectors up to sign, only where the value is well separated from its neighbours
        for i in range(k):
            gap = min(float(s[i - 1] - s[i]) if i else math.inf, float(s[i] - s[i + 1]))
            if gap > 1e-4:
                assert abs(float(res.V[:, i] @ Vh[i])) > 1 - 1e-8
                assert abs(float(res.U[:, i] @ U[:, i])) > 1 - 1e-8


@pytest.mark.parametrize("products", ["auto", "operator", "factors"])
def test_topk_matches_dense(nets, products):
    lin = nets["option-A"].linearize(tiny_image(2), dtype=F64)
    for op in (lin.unit(1, 2), lin.unit(2, 1), lin.stage(2)):
        res = S.spectrum(op, "topk", k=6, vectors=True, products=products, solver="block-krylov")
        assert res.route == "block-krylov" and res.method == "topk"
        assert res.info["products_via"] == ("sparse-factors" if products == "factors" else "operator")
        _check_triplets(res, op, largest=True)
        M = dense(op)
        assert torch.allclose(M @ res.V, res.U * res.values, atol=1e-6)
        # units with exact zero rows iterate on their active rows (U comes back full length)
        zero_rows = int((M.abs().sum(dim=1) == 0).sum())
        assert res.U.shape[0] == M.shape[0]
        if zero_rows and M.shape[0] <= M.shape[1]:
            assert res.info["active_rows"] == M.shape[0] - zero_rows


def test_bottomk_matches_dense(nets):
    lin = nets["tv-basic"].linearize(tiny_image(2), dtype=F64)
    op = lin.unit(2, 2)
    res = S.spectrum(op, "bottomk", k=4, solver="block-krylov")
    s = dense_sv(op)
    assert res.method == "bottomk" and res.converged and res.route == "block-krylov"
    assert (res.values - s[-4:]).abs().max() < 1e-6
    # a full-rank operator: compare vectors too
    g = torch.Generator().manual_seed(0)
    A = torch.randn(60, 40, generator=g, dtype=F64)
    op = DenseOperator(A)
    res = S.spectrum(op, "bottomk", k=3, vectors=True, solver="block-krylov")
    U, s, Vh = torch.linalg.svd(A, full_matrices=False)
    assert (res.values - s[-3:]).abs().max() < 1e-8
    for i in range(3):
        assert abs(float(res.V[:, i] @ Vh[-3 + i])) > 1 - 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_topk_past_the_rank_gives_zeros_to_round_off(dtype):
    """Top-k with k above the rank: the values past it were sqrt(eps) smax (the Gram's zeros,
    1e-3 smax in float32), now ||J v|| of their vectors: zero to ~eps smax, still sorted, and the
    vectors those of the dense SVD's null space."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(60, 3, generator=g, dtype=F64) @ torch.randn(3, 50, generator=g, dtype=F64)
    res = S.spectrum(DenseOperator(A.to(dtype)), "topk", k=6, vectors=True, solver="block-krylov")
    ref = torch.linalg.svdvals(A)
    eps = torch.finfo(dtype).eps
    assert res.converged and torch.equal(res.values, res.values.sort(descending=True).values)
    assert (res.values[:3].double() - ref[:3]).abs().max() < 100 * eps * ref[0]
    assert res.values[3:].max() < 100 * eps * ref[0], res.values
    V = res.V.double()
    assert (A @ V[:, 3:]).norm(dim=0).max() < 100 * eps * ref[0]
    assert (V.T @ V - torch.eye(6, dtype=F64)).abs().max() < 100 * eps


def test_iterative_repeated_values():
    """Values of a multiplicity above the block size: an invariant Krylov space continues from
    fresh directions (all k values, none missing), and copies of the structural zeros that a
    Krylov method cannot reach are reported (converged False, a warning), never silently."""
    op = make_unit(alpha=-1.0)  # m - 2r values exactly 1, n - m structural zeros
    s = dense_sv(op)
    n = min(op.shape)
    with warnings.catch_warnings():  # k = n reaches zeros, unresolved to tol by the Gram
        warnings.simplefilter("ignore", S.ConvergenceWarning)
        for k in (3, n):
            res = S.spectrum(op, "topk", k=k, tol=1e-6, solver="block-krylov")
            assert res.k == k and (res.values - s[:k]).abs().max() < 1e-6
        all_off = make_unit(shift=-100.0)  # inner layer dead: J = D_out, values 1 and 0
        res = S.spectrum(all_off, "topk", k=n, tol=1e-6, solver="block-krylov")
    assert res.k == n and (res.values - dense_sv(all_off)).abs().max() < 1e-6
    lin = make_net("option-A", units=1).linearize(tiny_image(hw=8), dtype=F64)
    op = lin.unit(2, 1)
    s = dense_sv(op)
    assert int((s < 1e-10).sum()) > 3
    with pytest.warns(S.ConvergenceWarning, match="missed copies"):
        res = S.spectrum(op, "bottomk", k=3, solver="block-krylov")
    assert not res.converged and "zeros" in res.info["missing_exact_values"]


@pytest.mark.parametrize("solver", ["arpack", "propack"])
def test_scipy_solvers(nets, solver):
    lin = nets["option-B"].linearize(tiny_image(2), dtype=F64)
    op = lin.unit(2, 2)
    res = S.spectrum(op, "topk", k=5, solver=solver, vectors=True)
    assert res.route == solver
    _check_triplets(res, op, largest=True)


def test_nonconvergence_is_reported(nets):
    lin = nets["option-B"].linearize(tiny_image(2), dtype=F64)
    op = lin.unit(1, 1)
    with pytest.warns(S.ConvergenceWarning, match="did not reach"):
        res = S.spectrum(op, "topk", k=20, block_size=2, ncv=30, max_iter=1, tol=1e-14, solver="block-krylov")
    assert not res.converged and res.iterations == 1
    assert float(res.residuals.max()) > 1e-14 * float(res.values[0])
    assert issubclass(S.ConvergenceWarning, RuntimeWarning)


def test_iterative_float32_operator(nets):
    lin = nets["akamaster"].linearize(tiny_image(2), dtype=torch.float32)
    op = lin.unit(1, 2)
    res = S.spectrum(op, "topk", k=4, solver="block-krylov")
    assert res.dtype == torch.float32 and res.converged and res.route == "block-krylov"
    ref = torch.linalg.svdvals(op.materialize(dtype=F64))[:4]
    assert (res.values.double() - ref).abs().max() < 1e-4
    with pytest.raises(TypeError, match="Linearize"):
        S.spectrum(op, "topk", k=4, dtype=F64)


def _spectrum_module():
    import importlib

    return importlib.import_module("linstab.spectra.spectrum")  # the attribute is the function


def test_auto_solver_takes_the_exact_route_on_small_operators(nets):
    """``solver="auto"`` on operators of at most 1024 values: the exact route (bottom-k k=5 on a
    256-dimensional autodiff unit did not converge in 300 restarts and returned wrong smallest
    values), sliced to k in the iterative results' order, against the dense float64 twin."""
    from factories import TanhUnit

    lin = nets["option-A"].linearize(tiny_image(2), dtype=F64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), TanhUnit(), TanhUnit(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))  # fmt: skip
    tanh = linstab.Network(model.eval(), input_shape=(3, 8, 8), unit_types=(TanhUnit,), name="tanh")
    smooth = tanh.linearize(tiny_image(2), dtype=F64).unit(1, 2)
    for op in (lin.unit(1, 2), lin.unit(2, 1), lin.stage(2), smooth):
        M = dense(op)
        U, s, Vh = torch.linalg.svd(M, full_matrices=False)
        for method, k, ref in (("topk", 3, s[:3]), ("bottomk", 5, s[-5:])):
            for vectors in (False, True):
                res = S.spectrum(op, method, k=k, vectors=vectors)
                assert res.route in linstab.linalg.results.EXACT_ROUTES, res.route
                assert "<= 1024" in res.info["why_exact"] and res.method == method
                assert res.k == k and res.converged and res.residuals is None and res.dtype == F64
                assert (res.values - ref).abs().max() < 1e-10 * float(s[0]), (method, res.values, ref)
                if vectors:
                    assert res.U.shape == (M.shape[0], k) and res.V.shape == (M.shape[1], k)
                    assert torch.allclose(M @ res.V, res.U * res.values, atol=1e-12)
                    assert torch.allclose(res.V.T @ res.V, torch.eye(k, dtype=F64), atol=1e-12)
    op32 = nets["option-A"].linearize(tiny_image(2), dtype=torch.float32).unit(1, 2)
    res = S.spectrum(op32, "bottomk", k=4)
    assert res.dtype == torch.float32 and res.values.dtype == torch.float32
    assert (res.values.double() - dense_sv(op32)[-4:]).abs().max() < 1e-6


def test_auto_solver_large_k_takes_the_exact_route_up_to_exact_max(nets, monkeypatch):
    """Top-k with k a large fraction of n (k = 1024 of 4096 took 94 s by block Krylov, the
    exact spectrum 0.8 s): exact when ``k > n / 8`` up to ``EXACT_MAX`` values; above it a
    warning before the long run; explicit solvers are never overridden. The limits are
    lowered so that a tiny unit (n = 256) stands for a large one."""
    mod = _spectrum_module()
    monkeypatch.setattr(mod, "AUTO_EXACT_SMALL", 16)
    op = nets["option-A"].linearize(tiny_image(2), dtype=F64).unit(1, 2)
    n = min(op.shape)
    s = dense_sv(op)
    assert mod.AUTO_EXACT_FRACTION == 8 and n == 256
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S.ConvergenceWarning)  # Krylov copies of the plateau
        assert S.spectrum(op, "topk", k=n // 8).route == "block-krylov"
        for method, ref in (("topk", s[: n // 8 + 1]), ("bottomk", s[-(n // 8 + 1) :])):
            res = S.spectrum(op, method, k=n // 8 + 1)
            assert res.route in ("structured", "gram") and res.info["why_exact"].startswith("k=33 > ")
            assert (res.values - ref).abs().max() < 1e-10
        for solver in ("block-krylov", "arpack"):
            assert S.spectrum(op, "topk", k=40, solver=solver).route == solver
        monkeypatch.setattr(mod, "EXACT_MAX", 128)
        with pytest.warns(UserWarning, match=r"topk k=33 of min\(n_out, n_in\) = 256.*method='exact'"):
            res = S.spectrum(op, "topk", k=n // 8 + 1, tol=1e-6)
        assert res.route == "block-krylov" and "why_exact" not in res.info

        def stop(*args, **kwargs):
            raise RuntimeError("the long run")

        monkeypatch.setattr(mod, "block_krylov", stop)
        with warnings.catch_warnings(record=True) as seen, pytest.raises(RuntimeError, match="the long run"):
            warnings.simplefilter("always")
            S.spectrum(op, "bottomk", k=n // 8 + 1)
        assert any(issubclass(w.category, UserWarning) and "smaller k" in str(w.message) for w in seen)
        with warnings.catch_warnings(), pytest.raises(RuntimeError):  # k <= n / 8: no warning
            warnings.simplefilter("error", UserWarning)
            S.spectrum(op, "topk", k=n // 8)


# --------------------------------------------------------------------------------------------
# input checks, result files
# --------------------------------------------------------------------------------------------
def test_input_validation(nets):
    lin = nets["option-A"].linearize(tiny_image(2), dtype=F64)
    op = lin.unit(1, 1)
    n = min(op.shape)
    with pytest.raises(TypeError, match="LinearOperator"):
        S.spectrum(np.eye(3))
    with pytest.raises(ValueError, match="method must be one of"):
        S.spectrum(op, "svd")
    with pytest.raises(ValueError, match="needs k"):
        S.spectrum(op, "topk")
    with pytest.raises(ValueError, match=f"1..{n}"):
        S.spectrum(op, "topk", k=n + 1)
    with pytest.raises(ValueError, match=f"1..{n}"):
        S.spectrum(op, "topk", k=0)
    with pytest.raises(TypeError, match="positive int"):
        S.spectrum(op, "topk", k=2.5)
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        S.spectrum(op, "exact", dtype=torch.float16)
    with pytest.raises(ValueError, match="solver must be one of"):
        S.spectrum(op, "topk", k=2, solver="lanczos")
    with pytest.raises(ValueError, match="route must be one of"):
        S.spectrum(op, "exact", route="fast")
    with pytest.raises(ValueError, match="needs k < min"):
        S.spectrum(op, "topk", k=n, solver="arpack")
    with pytest.raises(ValueError, match="no structured reduction"):
        S.spectrum(lin.unit(2, 1), "exact", route="structured")
    with pytest.raises(ValueError, match="0 < zero_tol < lo <= hi"):
        S.bands(op, (1.01, 0.99))
    with pytest.raises(TypeError, match="two numbers"):
        S.bands(op, 0.99)
    with pytest.raises(TypeError, match="LinearOperator"):
        S.bands("J")


def test_save_load_roundtrip(nets, tmp_path):
    lin = nets["option-A"].linearize(tiny_image(2), dtype=F64)
    res = S.spectrum(lin.unit(1, 2), "topk", k=3, vectors=True, solver="block-krylov")
    path = res.save(tmp_path / "s", extra={"model": "tiny"})
    assert path.suffix == ".npz"
    with np.load(path) as z:
        assert set(z.files) >= {"singular_values", "u", "v", "residuals", "metadata"}
    back = S.SpectrumResult.load(path)
    assert torch.equal(back.values, res.values) and torch.equal(back.V, res.V)
    assert back.method == "topk" and back.route == res.route and back.converged == res.converged
    assert back.info["model"] == "tiny" and back.info["products_via"] == res.info["products_via"]
    ex = S.spectrum(lin.unit(1, 2), "exact")
    back = S.SpectrumResult.load(ex.save(tmp_path / "e.npz"))
    assert back.n_exact_ones == ex.n_exact_ones and back.U is None


# --------------------------------------------------------------------------------------------
# network helpers, figures, CLI
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# real weights (slow): stage-3 units of ResNet-56, n = 4096
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet56_stage3(request):
    from factories import weights_dir

    if weights_dir() is None:
        pytest.skip("needs LINSTAB_WEIGHTS_DIR pointing at ../shared/weights (akamaster files)")
    net = linstab.load_model("resnet56-akamaster")
    x, _ = linstab.default_images([0])
    lin = net.linearize(x[0], dtype=F64)
    op = lin.unit(3, 5)
    M = dense(op)
    return lin, op, M, torch.linalg.svdvals(M)


@pytest.mark.slow
@pytest.mark.heavy
def test_real_stage3_unit_exact_bands_topk(resnet56_stage3):
    lin, op, M, s = resnet56_stage3
    res = S.spectrum(op, "exact")
    assert res.route == "structured"
    assert (res.values - s).abs().max() < 1e-8
    assert res.n_exact_ones == n_alpha(s) > 0
    bc = S.bands(op)
    assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(s, 4096)
    assert bc.n_exact_ones == res.n_exact_ones
    top = S.spectrum(op, "topk", k=16, vectors=True)
    assert top.converged and (top.values - s[:16]).abs().max() < 1e-8
    # each vector is a right singular vector of the dense matrix: M^T M v = s^2 v to rounding
    # (with the values equal, a residual r puts v within r / gap of the true one)
    V = top.V.reshape(M.shape[1], -1)
    resid = torch.linalg.vector_norm(M.T @ (M @ V) - V * s[:16] ** 2, dim=0)
    assert float(resid.max()) < 1e-9 * float(s[0]) ** 2


@pytest.mark.slow
@pytest.mark.heavy
def test_real_stage3_downsampling_unit(resnet56_stage3):
    lin = resnet56_stage3[0]
    op = lin.unit(3, 1)
    s = dense_sv(op)
    res = S.spectrum(op, "exact")
    assert res.route == "gram"
    assert (res.values - s).abs().max() < 1e-7
    bc = S.bands(op)
    assert bc.route == "inertia-gram"
    assert (bc.above, bc.plateau, bc.below, bc.zero) == dense_counts(s, min(op.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error", S.ConvergenceWarning)
        top = S.spectrum(op, "topk", k=8)
    assert (top.values - s[:8]).abs().max() < 1e-8


@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-basic"])
def test_bands_without_exact_ones_counts_the_same(kind):
    from factories import make_net

    net = make_net(kind, seed=5)
    lin = net.linearize(tiny_image(5), dtype=torch.float64)
    for u in net.units:
        op = lin.unit(u.stage, u.index)
        full, fast = S.bands(op), S.bands(op, exact_ones=False)
        assert (full.above, full.plateau, full.below, full.zero) == (
            fast.above,
            fast.plateau,
            fast.below,
            fast.zero,
        )
        assert fast.n_exact_ones in (None, full.n_exact_ones)


def test_krylov_sizes_are_checked_and_save_keeps_an_upper_case_suffix(nets, tmp_path):
    """``block_size``/``ncv`` must be positive ints (not silently replaced); ``save`` keeps a
    ``.NPZ`` name as it is."""
    op = nets["option-B"].linearize(tiny_image(2), dtype=F64).unit(1, 2)
    for name, v in (("block_size", 0), ("block_size", -1), ("ncv", 0), ("block_size", 2.0)):
        with pytest.raises(TypeError if isinstance(v, float) else ValueError, match=f"{name} must be an int"):
            S.spectrum(op, "topk", k=3, **{name: v})
    with pytest.raises(TypeError, match="seed"):
        S.spectrum(op, "topk", k=3, seed="a")
    for mb, err in ((0, ValueError), (-3, ValueError), (1.5, TypeError)):
        with pytest.raises(err, match="min_block must be an int >= 1"):
            S.bands(op, min_block=mb)
    res = S.spectrum(op, "topk", k=3, block_size=3, solver="block-krylov")
    assert res.info["block"] == 3
    path = res.save(tmp_path / "r.NPZ")
    assert path.name == "r.NPZ" and torch.equal(S.SpectrumResult.load(path).values, res.values)


# --------------------------------------------------------------------------------------------
# dense operators no network produces: repeats, non-finite products, SciPy solver failures
# --------------------------------------------------------------------------------------------
def _planted(s, seed: int = 3) -> DenseOperator:
    """``Q1 diag(s) Q2^T`` with random orthogonal ``Q1``, ``Q2`` (float64, square)."""
    g = torch.Generator().manual_seed(seed)
    n = len(s)
    q1, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return DenseOperator(q1 @ torch.diag(torch.as_tensor(s, dtype=F64)) @ q2.T)


@pytest.mark.parametrize(
    ("method", "k", "block"),
    [("topk", 10, None), ("topk", 40, None), ("topk", 40, 8), ("bottomk", 10, None), ("bottomk", 40, 8)],
)
def test_block_krylov_finds_repeats_wider_than_the_block(method, k, block):
    """A plateau of values exactly 1 (and exact zeros) wider than the block size, on a dense
    operator with no structure to check against: the residuals of a Krylov space holding only
    ``block_size`` copies were all below tol and the run returned wrong values as converged
    (topk k=10: error 0.13; bottomk of 50 zeros k=10: error 0.52); a verification cycle from
    fresh directions now finds the missing copies."""
    g = torch.Generator().manual_seed(1)
    if method == "topk":  # 3 values 3, 100 values exactly 1, the rest below 0.9
        s = torch.cat([torch.full((3,), 3.0), torch.ones(100), 0.9 * torch.rand(197, generator=g)])
    else:  # 50 exact zeros under values in [0.5, 2]
        s = torch.cat([0.5 + 1.5 * torch.rand(250, generator=g), torch.zeros(50)])
    op = _planted(s.double())
    ref = torch.linalg.svdvals(op.matrix)
    ref = ref[:k] if method == "topk" else ref[-k:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", S.ConvergenceWarning)
        res = S.spectrum(op, method, k=k, block_size=block, solver="block-krylov", vectors=True)
    assert res.converged and (res.values - ref).abs().max() < 1e-7, (res.values - ref).abs().max()
    assert res.info["missed_repeats_found"] >= 1
    eye = torch.eye(k, dtype=F64)
    assert (res.V.T @ res.V - eye).abs().max() < 1e-8
    nz = res.values > 1e-6  # U columns of values at rounding level of zero are zero (documented)
    U = res.U[:, nz]
    assert U.shape[1] == 0 or (U.T @ U - torch.eye(U.shape[1], dtype=F64)).abs().max() < 1e-8
    assert (res.U[:, ~nz] == 0).all()


@pytest.mark.parametrize("cluster", [False, True])
def test_block_krylov_verification_leaves_a_complete_result_unchanged(cluster):
    """Nothing missed: the verification cycle returns the converged values, vectors, residuals
    and iteration count exactly as they were (the cached results of the report stay valid). It
    runs only when the k values hold block-size copies of one value (here 2.0 twice with the
    default block of 2, its whole multiplicity); distinct values cost no extra product."""
    from linstab.linalg import block_krylov

    g = torch.Generator().manual_seed(2)
    top = torch.tensor([3.0, 2.0, 2.0, 1.9]) if cluster else torch.linspace(3, 1.5, 20)
    op = _planted(torch.cat([top, torch.rand(180, generator=g)]).double())
    kw = dict(k=6, solver="block-krylov", vectors=True, seed=5)
    res = S.spectrum(op, "topk", **kw)
    plain = block_krylov(
        op, 6, True, block=None, ncv=None, tol=1e-8, max_iter=60, seed=5, vectors=True, verify=False
    )
    assert res.info["block"] == 2 and res.info["missed_repeats_found"] == 0
    assert res.iterations == plain.iterations
    for a, b in (
        (res.values, plain.values),
        (res.U, plain.U),
        (res.V, plain.V),
        (res.residuals, plain.residuals),
    ):
        assert torch.equal(a, b)
    more = res.info["products"]["forward"] > plain.info["products"]["forward"]
    assert more == cluster, (res.info["products"], plain.info["products"])
    torch.testing.assert_close(res.values[:4], top[:4].double(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize(
    "kw",
    [
        dict(method="exact"),
        dict(method="exact", vectors=True),
        dict(method="exact", dense_solver="gram"),
        dict(method="topk", k=2),
        dict(method="topk", k=2, solver="block-krylov"),
        dict(method="bottomk", k=2, solver="block-krylov"),
        dict(method="topk", k=2, solver="arpack"),
        dict(method="topk", k=2, solver="propack"),
        dict(method="topk", k=2, solver="lobpcg"),
    ],
)
def test_non_finite_operator_is_refused_by_every_route(bad, kw):
    """NaN or Inf in the operator's products: a ValueError naming them, on every route. Before,
    Inf gave a silent NaN spectrum (exact routes), NaN a LinAlgError/ArpackError/SystemError,
    and PROPACK returned zeros."""
    A = torch.randn(20, 15, generator=torch.Generator().manual_seed(0), dtype=F64)
    A[3, 4] = bad
    with pytest.raises(ValueError, match="non-finite values"):
        S.spectrum(DenseOperator(A), **kw)


def test_non_finite_adjoint_is_refused_by_block_krylov():
    """Only the adjoint product is broken (an autodiff Jacobian with a NaN backward, say): the
    Krylov run raised no error and returned values with NaN residuals."""
    from linstab.operators import CallableOperator

    A = torch.randn(20, 15, generator=torch.Generator().manual_seed(0), dtype=F64)
    op = CallableOperator(lambda V: V @ A.T, lambda W: (W @ A) * math.nan, (15,), (20,), F64)
    with pytest.raises(ValueError, match="non-finite values .* J\\^T J q"):
        S.spectrum(op, "topk", k=2, solver="block-krylov")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_bands_refuse_non_finite_values(bad):
    """``bands`` of an operator with an Inf entry counted all its values as zero (NaN compares
    false with every edge); ``count_from_values`` now refuses NaN/Inf too."""
    A = torch.eye(6, dtype=F64)
    A[0, 1] = bad
    with pytest.raises(ValueError, match="non-finite values"):
        S.bands(DenseOperator(A))
    with pytest.raises(ValueError, match="NaN or Inf"):
        S.count_from_values(torch.tensor([1.0, bad], dtype=F64), 2, 0.99, 1.01, 1e-6)


def test_exact_band_counts_on_band_edges():
    """Values exactly on the edges (0.99, 1.0, 1.01, zero_tol, 0, -0.0, negative entries) are
    counted as the dense truth by every dense route, in every orientation."""
    d = torch.tensor(
        [0.0, -0.0, 1e-6, 1e-7, 0.99, -0.99, 1.0, 1.0, -1.0, 1.01, -1.01, 0.5, 2.0, 5e-7], dtype=F64
    )
    want = {"above": 1, "plateau": 7, "below": 1, "zero": 5}
    perm = torch.randperm(d.numel(), generator=torch.Generator().manual_seed(0))
    for M in (
        torch.diag(d),
        torch.diag(d)[perm],
        torch.cat([torch.diag(d), torch.zeros(14, 3, dtype=F64)], 1),
    ):
        op = DenseOperator(M)
        assert S.bands(op).counts == want
        for ds in ("svd", "gram"):
            n = min(M.shape)
            counts = S.count_from_values(S.spectrum(op, dense_solver=ds).values, n, 0.99, 1.01, 1e-6)
            assert counts == tuple(want.values()), (ds, counts)


@pytest.mark.parametrize(
    ("name", "value", "err", "match"),
    [
        ("tol", math.inf, ValueError, "tol must be a positive finite number"),
        ("tol", math.nan, ValueError, "tol must be a positive finite number"),
        ("tol", True, TypeError, "tol must be a positive finite number"),
        ("tol", "1e-3", TypeError, "tol must be a positive finite number"),
        ("max_iter", 2.5, TypeError, "max_iter must be an int"),
        ("max_iter", True, TypeError, "max_iter must be an int"),
        ("max_iter", "5", TypeError, "max_iter must be an int"),
        ("max_iter", 0, ValueError, "max_iter must be an int >= 1"),
        ("seed", 2**70, ValueError, "seed must be in"),
        ("seed", True, TypeError, "seed must be an int"),
    ],
)
def test_iterative_arguments_are_checked_before_any_product(name, value, err, match):
    """tol=inf/True and max_iter=2.5/True ran (inf: 'converged' at once); max_iter='5' and
    seed=2**70 failed inside with messages that did not name the argument."""
    calls = []
    A = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=F64)
    from linstab.operators import CallableOperator

    op = CallableOperator(
        lambda V: calls.append(1) or V @ A.T, lambda W: calls.append(1) or W @ A, (20,), (30,), F64
    )
    with pytest.raises(err, match=match):
        S.spectrum(op, "topk", k=2, solver="block-krylov", **{name: value})
    assert not calls


def test_iterative_accepts_numpy_scalars():
    """``seed=np.int64(3)`` (accepted by the check, then refused by torch's generator) and
    ``tol=np.float32(...)`` work as their Python equivalents."""
    op = _planted(torch.linspace(2, 0.1, 30).double())
    a = S.spectrum(op, "topk", k=2, solver="block-krylov", seed=np.int64(3), tol=np.float32(1e-6))
    b = S.spectrum(op, "topk", k=2, solver="block-krylov", seed=3, tol=float(np.float32(1e-6)))
    assert torch.equal(a.values, b.values)


def test_propack_failures_are_reported_not_raised_or_silent():
    """PROPACK's ``which='SM'`` on a tall operator returned a spurious 0 with a zero vector
    (tiny residual: converged, wrong values, no warning); its non-convergence raised a
    LinAlgError; ``max_iter < k`` failed with SciPy's message about ``kmax``."""
    A = torch.randn(40, 30, generator=torch.Generator().manual_seed(0), dtype=F64)
    op = DenseOperator(A)
    ref = torch.linalg.svdvals(A)
    with pytest.warns(S.ConvergenceWarning, match="not orthonormal"):
        res = S.spectrum(op, "bottomk", k=29, solver="propack")
    assert not res.converged and (res.values - ref[-29:]).abs().max() > 0.1  # the wrong values are flagged
    op2 = _planted(
        torch.cat([torch.ones(150), 3 * torch.rand(150, generator=torch.Generator().manual_seed(2))]).double()
    )
    with pytest.warns(S.ConvergenceWarning, match="did not converge"):
        res = S.spectrum(op2, "topk", k=5, solver="propack", seed=3)
    assert not res.converged and torch.isnan(res.values).all()
    with pytest.raises(ValueError, match="max_iter >= k"):
        S.spectrum(op, "topk", k=3, solver="propack", max_iter=2)
    with pytest.raises(ValueError, match="seed must be in .* for solver='arpack'"):
        S.spectrum(op, "topk", k=3, solver="arpack", seed=-1)
