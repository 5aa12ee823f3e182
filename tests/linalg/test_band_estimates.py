"""Band counts with confidence intervals (linstab.linalg.band_estimates) against exact counts.

* Coverage: over 100 probe seeds on a planted spectrum whose Lanczos runs end in an invariant
  subspace (exact quadrature: only the sampling part is left), the 95% intervals cover the
  exact counts at >= 85%, intervals shrunk to half their width do not (the check has power),
  and their width is close to the ideal one from the exact Hutchinson variance. With a
  continuous spectrum and few Lanczos steps the Gauss-Radau bounds keep the coverage.
* Exact parts: structural zeros are counted exactly (equal to the exact zero counts of tiny
  unit Jacobians); an operator whose non-structural values are all exactly 1 gives intervals
  that collapse to the exact counts; the exact ``|alpha|`` multiplicity clips intervals.
* Tiny unit Jacobians of every kind (float64 and float32) against :func:`linstab.spectra.bands`.
* Slow tier: unit 1.5 of ResNet-56 (akamaster weights), n = 16384.
"""

from __future__ import annotations

import json
import math
import time
import warnings

import pytest
import torch
from factories import F64, NET_KINDS, band_counts, gram_eig, levels, make_net, planted, tiny_image

import linstab
from linstab import spectra as S
from linstab.linalg import (
    BANDS,
    AccuracyWarning,
    band_estimate,
    estimate_bands,
    exact_parts,
    slq,
    steps_rule,
)
from linstab.operators import DenseOperator

F32 = torch.float32
LO, HI, ZT = 0.99, 1.01, 1e-6


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def few_levels():
    """120 active rows of 160 (40 structural zeros); 7 distinct values incl. 10 non-structural zeros."""
    vals = levels({0.0: 10, 0.3: 15, 0.985: 15, 1.0: 30, 1.005: 10, 1.015: 15, 1.5: 25})
    return planted(vals, 160, active=120, seed=11)


def ideal_sd(op, mask) -> dict[str, float]:
    """Exact standard deviation of one Rademacher Hutchinson sample of each band count."""
    lam, V = gram_eig(op, "left", mask)
    s = torch.sqrt(lam.clamp_min(0))
    sel = {
        "above": s > HI,
        "plateau": (s >= LO) & (s <= HI),
        "below": (s > ZT) & (s < LO),
        "zero": s <= ZT,
    }
    out = {}
    for b, m in sel.items():
        P = V[:, m] @ V[:, m].T
        out[b] = math.sqrt(2 * (float((P**2).sum()) - float((torch.diagonal(P) ** 2).sum())))
    return out


def test_coverage_over_100_seeds_with_exact_quadrature():
    op, mask, s = few_levels()
    truth = band_counts(s)
    assert truth == {"above": 40, "plateau": 40, "below": 30, "zero": 50}
    ex = exact_parts(op, active_rows=mask)
    N, seeds = 10, 100
    sd = ideal_sd(op, mask)
    hit = {b: 0 for b in BANDS}
    hit_shrunk = {b: 0 for b in BANDS}
    width = {b: 0.0 for b in BANDS}
    for seed in range(seeds):
        res = slq(op, n_probes=N, steps=10, reorth="full", exact=ex, seed=seed)
        # 7 distinct values: after 7 steps the Krylov space is invariant (to rounding)
        assert float(res.lanczos.beta[:, 6].max()) < 1e-6
        be = band_estimate(res, confidence=0.95)
        for b in BANDS:
            iv = be.band(b)
            assert iv.quad_halfwidth < 1e-6
            hit[b] += iv.contains(truth[b])
            half = (iv.upper - iv.lower) / 4  # half the width, about the estimate
            hit_shrunk[b] += iv.estimate - half - 1e-9 <= truth[b] <= iv.estimate + half + 1e-9
            width[b] += (iv.upper - iv.lower) / seeds
    coverage = {b: hit[b] / seeds for b in BANDS}
    shrunk = {b: hit_shrunk[b] / seeds for b in BANDS}
    print("coverage", coverage, "shrunk", shrunk)
    for b in BANDS:
        assert coverage[b] >= 0.85, (b, coverage)
        # width close to the ideal 2 * 1.96 * sd / sqrt(N) (t quantile and sd estimate: ~1.1x)
        ideal = 2 * 1.959964 * sd[b] / math.sqrt(N)
        assert 0.7 <= width[b] / ideal <= 1.7, (b, width[b], ideal)
    # the coverage check has power: intervals of half the width fail it
    assert sum(shrunk.values()) / len(shrunk) < 0.85, shrunk


def test_coverage_with_continuous_spectrum_and_few_steps():
    g = torch.Generator().manual_seed(5)
    vals = torch.cat(
        [
            0.02 + 0.96 * torch.rand(70, generator=g, dtype=F64),
            levels({1.0: 50}),
            torch.tensor([0.985, 0.989, 0.995, 1.003, 1.008, 1.011, 1.015], dtype=F64),
            1.02 + torch.rand(63, generator=g, dtype=F64),
        ]
    )
    op, mask, s = planted(vals, 220, active=190, seed=5)
    truth = band_counts(s)
    ex = exact_parts(op, active_rows=mask)
    seeds, hits, quad = 60, {b: 0 for b in BANDS}, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        for seed in range(seeds):
            be = estimate_bands(op, n_probes=10, steps=15, exact=ex, seed=seed)
            for b in BANDS:
                hits[b] += be.band(b).contains(truth[b])
            quad += be.plateau.quad_halfwidth / seeds
    coverage = {b: hits[b] / seeds for b in BANDS}
    print("coverage", coverage, "mean plateau quadrature half-width", quad)
    assert quad > 1.0  # 15 steps cannot resolve the edges: the Radau part is active
    assert all(c >= 0.85 for c in coverage.values()), coverage


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_all_exact_collapses_to_the_exact_counts(dtype):
    d = torch.tensor([1.0] * 30 + [0.0] * 14 + [1.0] * 20, dtype=dtype)
    op = DenseOperator(torch.diag(d))
    be = estimate_bands(op, n_probes=4, steps=5, exact=exact_parts(op, active_rows=d != 0))
    assert be.n_structural_zero == 14 and be.n_probe_space == 50
    for b, c in {"above": 0, "plateau": 50, "below": 0, "zero": 14}.items():
        iv = be.band(b)
        assert iv.lower == iv.upper == iv.estimate == c, (b, iv)
    # without the mask the 14 zeros are estimated, not known: an interval, still covering
    # (in float32 the rounding margin makes s = 0 indistinguishable from small values)
    be = estimate_bands(op, n_probes=4, steps=5, exact=None, warn=False)
    assert be.n_structural_zero == 0 and be.zero.contains(14)


def test_no_active_rows_gives_exact_zero_counts():
    op = DenseOperator(torch.zeros((30, 30), dtype=F64))
    be = estimate_bands(op, n_probes=3, exact=exact_parts(op, active_rows=torch.zeros(30, dtype=torch.bool)))
    assert be.n_probe_space == 0 and (be.zero.lower, be.zero.upper) == (30, 30)
    assert all(be.band(b).upper == 0 for b in ("above", "plateau", "below"))


def test_structural_zeros_equal_exact_zero_counts_on_units():
    for kind in ("option-A", "tv-basic", "tv-bottleneck", "akamaster"):
        net = make_net(kind, seed=NET_KINDS.index(kind))
        lin = net.linearize(tiny_image(3), dtype=F64)
        for u in net.units:
            op = lin.unit(u.stage, u.index)
            exact = S.bands(op)
            be = estimate_bands(op, n_probes=4, steps=30, seed=1, warn=False)
            m = int((op.out_deriv != 0).sum())
            assert be.n_structural_zero == min(op.shape) - min(m, op.shape[1]) == exact.zero, (kind, u)
            # the zeros are all structural: counted exactly (the interval only admits a few
            # small values that 30 steps cannot separate from 0)
            assert be.zero.lower == exact.zero and be.zero.upper <= exact.zero + 0.05 * be.n_probe_space


@pytest.mark.parametrize("kind", NET_KINDS)
def test_intervals_cover_exact_bands_of_tiny_units(kind):
    if kind == "pytorchcv":
        pytest.importorskip("pytorchcv")
    net = make_net(kind, seed=NET_KINDS.index(kind))
    lin = net.linearize(tiny_image(3), dtype=F64)
    for u in net.units[:3]:
        op = lin.unit(u.stage, u.index)
        exact = S.bands(op)
        be = estimate_bands(op, n_probes=16, steps=80, confidence=0.99, seed=2, warn=False)
        assert all(be.covers(exact).values()), (kind, u, exact.counts, be.to_dict())
        if exact.n_exact_ones:
            assert be.n_exact_plateau == exact.n_exact_ones  # m - 2r is the exact count here
            assert be.plateau.lower >= exact.n_exact_ones


def test_adaptive_steps_stop_early_and_keep_coverage():
    """Without ``steps`` the runs stop once the intervals meet the target (or quadrature no
    longer dominates): fewer steps than the cap, the target half-width met or the sampling part
    dominant, and the exact counts still covered (the brackets are rigorous at any step).
    """
    net = make_net("tv-bottleneck", seed=3)
    lin = net.linearize(tiny_image(3), dtype=F64)
    for u in net.units[:3]:
        op = lin.unit(u.stage, u.index)
        exact = S.bands(op)
        be = estimate_bands(op, n_probes=16, accuracy=0.05, resolution=0.0005, seed=2, warn=False)
        assert be.max_steps is not None and be.lanczos_steps < be.max_steps, (u, be.lanczos_steps)
        assert all(be.covers(exact).values()), (u, exact.counts, be.to_dict())
        for b in BANDS:
            iv = be.band(b)
            assert iv.quad_halfwidth <= max(0.05 * be.n - iv.stat_halfwidth, iv.stat_halfwidth / 2) + 1e-9
        # fixed steps: no cap recorded, exactly the steps asked for
        fixed = estimate_bands(op, n_probes=4, steps=12, seed=2, warn=False)
        assert fixed.max_steps is None and fixed.lanczos_steps == min(12, fixed.n_probe_space)
    # a tighter target takes more steps (unit 1.2: the quadrature part dominates at 16 steps
    # and vanishes at 32, where the small spectrum is resolved)
    op = lin.unit(1, 2)
    loose = estimate_bands(op, n_probes=64, accuracy=0.2, resolution=0.0005, seed=0, warn=False)
    tight = estimate_bands(op, n_probes=64, accuracy=0.01, resolution=0.0005, seed=0, warn=False)
    assert loose.lanczos_steps == 16 and tight.lanczos_steps == 32
    assert tight.plateau.quad_halfwidth < 0.1 * loose.plateau.quad_halfwidth
    with pytest.raises(ValueError, match="accuracy"):
        steps_rule(10, accuracy=1.5)
    with pytest.raises(ValueError, match="zero_tol"):
        steps_rule(10, zero_tol=2.0)


def test_stages_and_autodiff_jacobians():
    """A stage (composition) inherits its last unit's zero rows; an autodiff Jacobian has no
    known structure and everything is estimated. Both are covered."""
    net = make_net("option-B", seed=1)
    lin = net.linearize(tiny_image(4), dtype=F64)
    stage = lin.stage(2)
    last = lin.unit(2, 2)
    ex = exact_parts(stage)
    assert ex.n_structural_zero == int((last.out_deriv == 0).sum()) and ex.side == "left"
    auto = lin.unit(1, 2, method="autodiff")
    assert exact_parts(auto).n_structural_zero == 0 and exact_parts(auto).plateau_value is None
    for op in (stage, auto):
        exact = S.bands(op)
        be = estimate_bands(op, n_probes=16, steps=80, confidence=0.99, seed=5, warn=False)
        assert all(be.covers(exact).values()), (exact.counts, be.to_dict())
        assert exact.zero >= be.n_structural_zero


def test_float32_unit_covers_the_float64_counts():
    net = make_net("akamaster", seed=4)
    x = tiny_image(5)
    for stage, index in ((1, 2), (2, 1)):
        op32 = net.linearize(x, dtype=F32).unit(stage, index)
        exact = S.bands(net.linearize(x, dtype=F64).unit(stage, index))
        be = estimate_bands(op32, n_probes=16, steps=80, confidence=0.99, seed=3, warn=False)
        assert be.dtype == "float32" and be.rounding_margin > 1e-6
        assert all(be.covers(exact).values()), (exact.counts, be.to_dict())


def test_exact_plateau_outside_the_band_clips_its_band():
    vals = levels({0.5: 40, 1.0: 10, 1.3: 30, 0.2: 20})
    op, mask, s = planted(vals, 100, seed=2)
    ex = exact_parts(op, active_rows=mask, plateau_value=0.5, n_exact_plateau=40)
    assert ex.plateau_value == 0.5 and ex.n_exact_plateau == 40
    be = estimate_bands(op, n_probes=3, steps=8, exact=ex, seed=0)
    assert be.below.lower >= 40
    for b in ("above", "plateau"):
        assert be.band(b).upper <= 60
    assert all(be.covers(band_counts(s)).values())


def test_bootstrap_interval():
    net = make_net("tv-basic", seed=2)
    op = net.linearize(tiny_image(3), dtype=F64).unit(1, 2)
    exact = S.bands(op)
    res = slq(op, n_probes=16, steps=80, seed=4)
    bt = band_estimate(res, interval="bootstrap", confidence=0.99, warn=False)
    tt = band_estimate(res, interval="t", confidence=0.99, warn=False)
    assert all(bt.covers(exact).values())
    for b in BANDS:
        wb, wt = bt.band(b).upper - bt.band(b).lower, tt.band(b).upper - tt.band(b).lower
        assert wb <= 1.5 * wt + 1e-9 and wt <= 2.0 * wb + 1e-9


def test_too_few_steps_warn():
    op, mask, _ = planted(torch.linspace(0.0, 2.0, 150, dtype=F64), 150)
    with pytest.warns(AccuracyWarning, match="quadrature") as rec:
        be = estimate_bands(op, n_probes=4, steps=3)
    assert rec[0].filename == __file__  # points at the caller
    assert issubclass(AccuracyWarning, RuntimeWarning)
    assert be.plateau.quad_halfwidth > be.plateau.stat_halfwidth


def test_to_dict_and_covers():
    net = make_net("option-A", seed=0)
    op = net.linearize(tiny_image(3), dtype=F64).unit(1, 2)
    be = estimate_bands(op, n_probes=4, steps=20, warn=False)
    d = json.loads(json.dumps(be.to_dict()))
    for b in BANDS:
        assert set(d[b]) == {"estimate", "lower", "upper", "stat_halfwidth", "quad_halfwidth", "exact"}
    assert d["n"] == 256 and d["n_structural_zero"] == be.zero.exact
    exact = S.bands(op)
    assert be.covers(exact) == be.covers(exact.counts)
    assert sum(be.counts.values()) == pytest.approx(256, abs=1.0)
    assert be.samples["above"].shape == (4, 3)


def test_input_errors():
    op, _, _ = planted(torch.linspace(0.1, 2.0, 30, dtype=F64), 30)
    res = slq(op, n_probes=3, steps=4)
    with pytest.raises(ValueError, match="zero_tol < lo <= hi"):
        band_estimate(res, (1.01, 0.99))
    with pytest.raises(ValueError, match="zero_tol < lo <= hi"):
        band_estimate(res, (0.99, 1.01), zero_tol=0.995)
    with pytest.raises(ValueError, match="zero_tol < lo <= hi"):
        band_estimate(res, (float("nan"), 1.01))
    with pytest.raises(TypeError, match="two numbers"):
        band_estimate(res, "ab")
    with pytest.raises(TypeError, match="zero_tol"):
        band_estimate(res, zero_tol="small")
    with pytest.raises(ValueError, match="confidence"):
        band_estimate(res, confidence=1.0)
    with pytest.raises(ValueError, match="interval"):
        band_estimate(res, interval="normal")
    with pytest.raises(ValueError, match="rounding_margin"):
        band_estimate(res, rounding_margin=-1.0)
    with pytest.raises(ValueError, match="n_boot"):
        band_estimate(res, interval="bootstrap", n_boot=1)
    with pytest.raises(TypeError, match="SLQResult"):
        band_estimate(op)
    with pytest.raises(ValueError, match="at least 2 probes"):
        band_estimate(slq(op, n_probes=1, steps=4))
    with pytest.raises(ValueError, match="n_probes >= 2"):
        estimate_bands(op, n_probes=1)
    with pytest.raises(ValueError, match="n_probes >= 2"):
        estimate_bands(op, n_probes=0)
    with pytest.raises(TypeError, match="n_probes must be an int"):
        estimate_bands(op, n_probes=2.0)
    with pytest.raises(TypeError, match="LinearOperator"):
        estimate_bands(op.matrix, n_probes=2, steps=2)
    with pytest.raises(ValueError, match="band must be"):
        estimate_bands(op, n_probes=2, steps=2, warn=False).band("middle")


@pytest.mark.slow
@pytest.mark.heavy
def test_resnet56_unit_1_5_bands_covered(shared_weights, monkeypatch):
    """Unit 1.5 of ResNet-56 at image 0 (n = 16384): intervals cover the exact inertia counts."""
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(shared_weights))
    torch.set_num_threads(1)
    net = linstab.load_model("resnet56-akamaster")
    images, _ = linstab.default_images()
    op = net.linearize(images[0], dtype=torch.float64).unit(1, 5)
    exact = S.bands(op, threads=1)
    t0 = time.perf_counter()
    be = estimate_bands(op, n_probes=16, steps=1000, confidence=0.95, seed=0)
    seconds = time.perf_counter() - t0
    print(json.dumps(be.to_dict(), indent=1), exact.counts, f"{seconds:.1f} s")
    assert be.n_structural_zero == exact.zero == 2092
    assert be.n_exact_plateau == exact.n_exact_ones == 6270
    assert all(be.covers(exact).values()), (exact.counts, be.counts)
    for b in ("above", "plateau", "below"):
        assert be.band(b).upper - be.band(b).lower < 0.05 * be.n  # informative: < 5% of n


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        (dict(confidence=1.5), ValueError, "confidence"),
        (dict(confidence=float("nan")), ValueError, "confidence"),
        (dict(interval="normal"), ValueError, "interval"),
        (dict(rounding_margin=-1.0), ValueError, "rounding_margin"),
        (dict(rounding_margin=float("nan")), ValueError, "rounding_margin"),
        (dict(seed=2.5), TypeError, "seed must be an int"),
        (dict(seed=True), TypeError, "seed must be an int"),
    ],
)
def test_estimate_bands_checks_its_arguments_before_any_product(kw, err, match):
    """``confidence``, ``interval`` and ``rounding_margin`` were checked by ``band_estimate``
    only after all Lanczos runs (minutes on a real unit); a float seed was truncated to an int
    (``seed=2.5`` ran as ``seed=2``)."""
    from linstab.operators import CallableOperator

    A = torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=F64)
    calls = []
    op = CallableOperator(
        lambda V: calls.append(1) or V @ A.T, lambda W: calls.append(1) or W @ A, (30,), (30,), F64
    )
    with pytest.raises(err, match=match):
        estimate_bands(op, n_probes=4, **kw)
    assert not calls
    with pytest.raises(TypeError, match="seed must be an int"):
        slq(op, n_probes=2, steps=2, seed=1.5)
    assert not calls
