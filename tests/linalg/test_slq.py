"""Stochastic Lanczos quadrature (linstab.linalg.slq) against exact spectra of dense twins.

Dense twins: planted spectra with an exact plateau at 1 and structural zero rows, and unit
Jacobians of tiny seeded networks (``materialize`` + ``svdvals`` in float64). Checks the
histogram and moments against the exact singular values, the smoothed density, float32, the
parameter rule, the ``s_max`` bound, deflation by top-k triplets and input errors.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from factories import F64, levels, make_net, nan_operator, planted, tiny_image

from linstab import spectra as S
from linstab.linalg import (
    DEFAULT_RESOLUTION,
    AccuracyWarning,
    ExactParts,
    choose_parameters,
    exact_parts,
    rademacher_probes,
    slq,
    spectral_bound,
)
from linstab.operators import DenseOperator

F32 = torch.float32
EDGES = torch.tensor([0.0, 1e-6, 0.5, 0.9, 0.99, 1.01, 1.2, 1.6, 2.5], dtype=F64)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def twin(seed: int = 0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    vals = torch.cat(
        [
            0.05 + 0.9 * torch.rand(60, generator=g, dtype=F64),
            levels({1.0: 70}),  # the exact plateau
            1.02 + 0.8 * torch.rand(60, generator=g, dtype=F64),
            levels({2.2: 10}),
        ]
    )
    return planted(vals, 260, active=200, seed=seed, dtype=dtype)  # 60 structural zeros


def exact_hist(s: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    idx = torch.bucketize(s, edges, right=True) - 1
    return torch.bincount(idx.clamp(0, edges.numel() - 2), minlength=edges.numel() - 1).to(F64)


def test_histogram_and_moments_match_the_exact_spectrum():
    op, mask, s = twin()
    res = slq(op, n_probes=40, steps=60, exact=exact_parts(op, active_rows=mask), bins=EDGES)
    assert res.n == 260 and res.n_probe_space == 200 and res.exact.n_structural_zero == 60
    assert res.nodes.shape == res.weights.shape == (40, 60)
    assert torch.allclose(res.weights.sum(dim=1), torch.ones(40, dtype=F64))
    ref = exact_hist(s, EDGES)
    assert res.hist[0] == 60  # structural zeros, exactly (no estimated value is that small)
    err = (res.hist - ref).abs()
    assert bool((err <= 4 * res.hist_stderr + 3).all()), (res.hist, ref, res.hist_stderr)
    assert float(res.hist.sum()) == pytest.approx(260, abs=1e-9)
    # moments: Hutchinson estimates of tr(A^j); the rule is exact per probe
    m = res.moments([0, 1, 2, 3])
    exact = torch.tensor([260.0] + [float((s ** (2 * j)).sum()) for j in (1, 2, 3)], dtype=F64)
    assert torch.allclose(m, exact, rtol=0.03)
    assert res.s_max_estimate() == pytest.approx(2.2, rel=1e-6)


def test_density_of_a_unit_jacobian_matches_the_smoothed_exact_density():
    net = make_net("tv-basic", seed=2)
    op = net.linearize(tiny_image(3), dtype=F64).unit(1, 2)
    s = torch.linalg.svdvals(op.materialize(dtype=F64))
    grid = torch.linspace(-0.2, 3.0, 321, dtype=F64)
    sigma = 0.08
    res = slq(op, n_probes=30, steps=40, grid=grid, sigma=sigma, seed=1)
    kernel = torch.exp(-0.5 * ((grid[:, None] - s[None, :]) / sigma) ** 2)
    ref = kernel.sum(1) / (math.sqrt(2 * math.pi) * sigma)
    h = float(grid[1] - grid[0])
    l1 = float((res.density - ref).abs().sum()) * h / s.numel()
    assert l1 < 0.03, l1  # relative L1 error of the smoothed density (measured 0.012)
    assert float(res.density.sum()) * h == pytest.approx(s.numel(), rel=0.02)
    n_zero = int((s <= 1e-6).sum())
    assert res.exact.n_structural_zero == n_zero  # every zero of this unit is structural


def test_float32_matches_float64():
    op64, mask, s = twin(1)
    op32 = DenseOperator(op64.matrix.float())
    kw = dict(n_probes=24, steps=50, bins=EDGES, seed=3)
    r64 = slq(op64, exact=exact_parts(op64, active_rows=mask), **kw)
    r32 = slq(op32, exact=exact_parts(op32, active_rows=mask), **kw)
    assert r32.dtype == F32 and r32.nodes.dtype == F64
    ref = exact_hist(s, EDGES)
    for r in (r64, r32):
        assert bool(((r.hist - ref).abs() <= 4 * r.hist_stderr + 3).all()), (r.hist, ref)
    # same probes: the moments (exact per probe) agree to float32 rounding
    assert torch.allclose(r32.moments([1, 2]), r64.moments([1, 2]), rtol=1e-4)


def test_full_reorthogonalization_gives_the_same_density():
    op, mask, _ = twin(2)
    ex = exact_parts(op, active_rows=mask)
    a = slq(op, n_probes=8, steps=30, exact=ex, bins=EDGES, reorth="none")
    b = slq(op, n_probes=8, steps=30, exact=ex, bins=EDGES, reorth="full")
    assert torch.allclose(a.hist, b.hist, atol=0.01)


def test_deflation_by_top_triplets_composes_with_spectrum_topk():
    op, mask, s = twin(3)
    ex = exact_parts(op, active_rows=mask)
    top = S.spectrum(op, "topk", k=10, vectors=True, solver="block-krylov")  # (auto: exact, n = 260)
    res = slq(op, n_probes=20, steps=40, exact=ex, deflate=top, bins=EDGES)
    assert res.lanczos.reorth == "selective"
    assert res.nodes.shape == (20, 50) and res.deflated_values.shape == (10,)
    # the block Krylov solver returns all 10 copies of 2.2 (before its verification cycle it
    # returned 6 of them and 4 smaller values, as converged)
    assert torch.allclose(top.values, torch.full((10,), 2.2, dtype=F64), atol=1e-10)
    assert torch.allclose(res.deflated_values, top.values**2, atol=1e-12)
    # per probe the deflated weights sum to |P z|^2 for the projector P onto the 10 vectors:
    # mean 10, standard deviation at most sqrt(2 * 10 / 20) = 1 over 20 probes
    assert abs(float(res.deflated_weights.sum(dim=1).mean()) - 10) < 3
    ref = exact_hist(s, EDGES)
    assert bool(((res.hist - ref).abs() <= 4 * res.hist_stderr + 3).all()), (res.hist, ref)
    # with the deflated atoms the rule stays exact per probe: moments = mean of z^T A^j z
    J = op.materialize()
    A = J @ J.T
    Z = rademacher_probes(260, 20, dtype=F64, support=mask, seed=0)
    exact = torch.stack(
        [torch.einsum("ib,ib->b", Z, torch.linalg.matrix_power(A, j) @ Z).mean() for j in (1, 2)]
    )
    assert torch.allclose(res.moments([1, 2]), exact, rtol=1e-9)


def test_spectral_bound_is_an_upper_bound_and_uses_topk():
    op, mask, s = twin(4)
    b = spectral_bound(op, exact=exact_parts(op, active_rows=mask))
    assert float(s.max()) <= b <= 1.05 * float(s.max())
    top = S.spectrum(op, "topk", k=2)
    assert spectral_bound(op, topk=top, safety=1.0) >= float(s.max()) - 1e-10
    with pytest.raises(ValueError, match="safety"):
        spectral_bound(op, safety=0.5)


def test_choose_parameters_rule():
    N, k = choose_parameters(16384, accuracy=0.01, s_max=1.83)
    # probes: z^2 p / (2 (eps n)^2) = 3.84 * 16384 / (2 * 163.84^2) -> 2, raised to min_probes
    assert N == 8
    assert k == math.ceil(math.pi * math.sqrt(1.83**2 - 1) / (2 * DEFAULT_RESOLUTION))
    assert choose_parameters(16384, s_max=1.83, resolution=0.005)[1] == math.ceil(
        math.pi * math.sqrt(1.83**2 - 1) / (2 * 0.005)
    )
    N2, _ = choose_parameters(16384, accuracy=0.001, s_max=1.83)
    assert N2 == math.ceil(1.959964**2 * 16384 / (2 * 16.384**2))
    _, k2 = choose_parameters(100, accuracy=0.01, s_max=1.83, resolution=1e-4)
    assert k2 == 100  # capped at the probe-space dimension
    _, k3 = choose_parameters(10**6, s_max=1.83, resolution=1e-4, max_steps=500)
    assert k3 == 500
    for bad in (dict(accuracy=0.0), dict(accuracy=1.5), dict(confidence=1.0), dict(resolution=-1.0)):
        with pytest.raises(ValueError):
            choose_parameters(100, s_max=2.0, **bad)
    with pytest.raises(ValueError, match="min_probes"):
        choose_parameters(100, s_max=2.0, min_probes=1)


def test_default_parameters_come_from_the_rule():
    op, mask, _ = twin(5)
    ex = exact_parts(op, active_rows=mask)
    res = slq(op, exact=ex)
    _, k = choose_parameters(200, n=260, s_max=spectral_bound(op, exact=ex, seed=7919))
    assert res.n_probes == 16 and res.lanczos_steps == k
    res = slq(op, exact=ex, accuracy=0.005, steps=5)
    assert res.n_probes == choose_parameters(200, n=260, accuracy=0.005, s_max=3.0)[0]


def test_to_dict_is_json():
    op, mask, _ = twin(6)
    res = slq(op, n_probes=4, steps=10, exact=exact_parts(op, active_rows=mask))
    d = json.loads(json.dumps(res.to_dict()))
    assert d["n"] == 260 and d["exact"]["n_structural_zero"] == 60 and len(d["hist"]) == 100


def test_input_errors():
    op, mask, _ = twin(7)
    with pytest.raises(TypeError, match="LinearOperator"):
        slq(op.matrix, n_probes=2, steps=2)
    with pytest.raises(ValueError, match="n_probes must be an int >= 1; got 0"):
        slq(op, n_probes=0, steps=2)
    with pytest.raises(TypeError, match="n_probes must be an int"):
        slq(op, n_probes=2.0, steps=2)
    with pytest.raises(ValueError, match="steps must be an int >= 1; got 0"):
        slq(op, n_probes=2, steps=0)
    with pytest.raises(ValueError, match="reorth"):
        slq(op, n_probes=2, steps=2, reorth="partial")
    with pytest.raises(TypeError, match="exact must be"):
        slq(op, n_probes=2, steps=2, exact="yes")
    with pytest.raises(ValueError, match="exact parts are for n"):
        slq(
            op,
            n_probes=2,
            steps=2,
            exact=ExactParts(n=5, side="right", support=None, n_probe_space=5, n_structural_zero=0),
        )
    with pytest.raises(TypeError, match="SpectrumResult"):
        slq(op, n_probes=2, steps=2, deflate=torch.eye(3))
    with pytest.raises(ValueError, match="vectors"):
        slq(op, n_probes=2, steps=2, deflate=S.spectrum(op, "topk", k=2))
    with pytest.raises(ValueError, match="NaN"):
        slq(nan_operator(30), n_probes=2, steps=3)
    res = slq(op, n_probes=2, steps=3)
    with pytest.raises(ValueError, match="increasing"):
        res.histogram([1.0, 0.5])
    with pytest.raises(ValueError, match="sigma"):
        res.smoothed_density([0.0, 1.0], 0.0)
    with pytest.raises(ValueError, match="orders"):
        res.moments([-1])
    with pytest.raises(TypeError, match="active_rows"):
        exact_parts(op, active_rows=mask.float())
    with pytest.raises(ValueError, match="shape"):
        exact_parts(op, active_rows=mask[:10])
    with pytest.raises(ValueError, match="plateau_value"):
        exact_parts(op, n_exact_plateau=3)


def test_unconverged_deflation_warns():
    op, mask, _ = twin(8)
    top = S.spectrum(op, "topk", k=3, vectors=True)
    top.converged = False
    with pytest.warns(AccuracyWarning, match="did not converge"):
        slq(op, n_probes=2, steps=3, deflate=top, exact=exact_parts(op, active_rows=mask))
    assert issubclass(AccuracyWarning, S.ConvergenceWarning) and issubclass(AccuracyWarning, RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slq(op, n_probes=2, steps=3, exact=exact_parts(op, active_rows=mask))
