"""Bootstrap intervals and the Wilcoxon signed-rank test, checked against SciPy on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from linstab.analyses import statistics as S

DATA = np.array([0.31, 0.27, 0.35, 0.42, 0.29, 0.33, 0.38, 0.25, 0.36, 0.30, 0.41, 0.28, 0.34, 0.39, 0.26])


@pytest.mark.parametrize("statistic", [np.median, np.mean], ids=["median", "mean"])
@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_equals_scipy_percentile(statistic, seed):
    """Same seed, same resamples (``rng.integers(0, n, (B, n))``): SciPy's interval, exactly."""
    ours = S.bootstrap_ci(DATA, statistic, n_resamples=9999, seed=seed)
    ref = stats.bootstrap(
        (DATA,), statistic, method="percentile", n_resamples=9999, confidence_level=0.95,
        rng=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    assert ours.value == pytest.approx(float(statistic(DATA)))
    assert ours.low == pytest.approx(ref.low, rel=1e-12) and ours.high == pytest.approx(ref.high, rel=1e-12)
    assert ours.n == DATA.size and ours.confidence == 0.95
    assert ours.low <= ours.value <= ours.high


def test_bootstrap_is_seeded_and_handles_small_and_bad_input():
    a, b = S.bootstrap_ci(DATA, seed=3), S.bootstrap_ci(DATA, seed=3)
    assert a == b
    one = S.bootstrap_ci([0.5])
    assert one.value == 0.5 and math.isnan(one.low) and one.n == 1
    assert "no interval" in one.text()
    empty = S.bootstrap_ci([math.nan, math.inf])
    assert empty.n == 0 and math.isnan(empty.value)
    const = S.bootstrap_ci([2.0, 2.0, 2.0])
    assert (const.low, const.value, const.high) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="confidence"):
        S.bootstrap_ci(DATA, confidence=1.5)
    with pytest.raises(ValueError, match="1-D"):
        S.bootstrap_ci(np.zeros((2, 2, 2)))


def test_two_stage_bootstrap_over_images_and_seeds():
    rng = np.random.default_rng(0)
    per_image = rng.normal(1.0, 0.2, size=12)
    # identical seeds: the two-stage interval equals the one over images (same image draws)
    same = np.repeat(per_image[:, None], 3, axis=1)
    two = S.bootstrap_ci(same, np.mean, seed=4)
    one = S.bootstrap_ci(per_image, np.mean, seed=4)
    assert two.value == pytest.approx(one.value) and two.n_seeds == 3
    assert two.low == pytest.approx(one.low) and two.high == pytest.approx(one.high)
    # seed noise widens the interval
    noisy = same + rng.normal(0, 0.3, size=same.shape)
    wide = S.bootstrap_ci(noisy, np.mean, seed=4)
    assert wide.high - wide.low > one.high - one.low
    # a row with a non-finite seed value is dropped
    noisy[0, 1] = math.nan
    assert S.bootstrap_ci(noisy, np.mean).n == 11


X = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30, 1.91])
Y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29, 1.21])


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize(
    "x,y",
    [
        (X, Y),  # n = 10, no ties: exact
        (np.array([1.0, 2.0, 2.0, 3.0, -1.0, 4.0, 0.0, 2.0]), None),  # ties and a zero: permutation
        (np.r_[X, X + 0.013, X * 1.7], np.r_[Y, Y - 0.02, Y * 1.1]),  # n = 30: exact
        (np.round(np.linspace(-1, 3, 60), 1), None),  # n = 60 with ties: asymptotic
    ],
    ids=["exact", "permutation", "exact-30", "asymptotic"],
)
def test_wilcoxon_matches_scipy(x, y, alternative):
    ours = S.wilcoxon_signed_rank(x, y, alternative=alternative)
    ref = stats.wilcoxon(x, y, alternative=alternative)
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-6, abs=1e-12)
    if alternative != "two-sided":
        assert ours.statistic == pytest.approx(float(ref.statistic))


def test_wilcoxon_methods_and_edge_cases():
    assert S.wilcoxon_signed_rank(X, Y).method == "exact"
    assert S.wilcoxon_signed_rank([1.0, 1.0, -2.0]).method == "permutation"
    assert S.wilcoxon_signed_rank(np.arange(1.0, 70.0)).method == "asymptotic"
    zero = S.wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0])
    assert zero.p_value == 1.0 and zero.n == 0
    assert math.isnan(S.wilcoxon_signed_rank([math.nan]).p_value)
    # five images all in the claimed direction: the smallest one-sided p-value, 1/32
    five = S.wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5], alternative="greater")
    assert five.p_value == pytest.approx(1 / 32) == S.min_p_value(5)
    assert S.min_p_value(4) > 0.05 and S.min_p_value(5, "two-sided") > 0.05
    with pytest.raises(ValueError, match="alternative"):
        S.wilcoxon_signed_rank(X, alternative="bigger")
    with pytest.raises(ValueError, match="paired"):
        S.wilcoxon_signed_rank(X, Y[:3])


def test_theil_sen_slope_matches_scipy():
    x = np.arange(8.0)
    y = np.array([0.2, 0.25, 0.22, 0.3, 0.28, 0.35, 0.5, 0.33])
    assert S.theil_sen_slope(x, y) == pytest.approx(stats.theilslopes(y, x).slope)
    assert S.theil_sen_slope([1.0, 2.0], [3.0, 1.0]) == pytest.approx(-2.0)
    assert math.isnan(S.theil_sen_slope([1.0], [1.0]))
    with pytest.raises(ValueError, match=r"one length, got shapes \(3,\) and \(2,\)"):
        S.theil_sen_slope([1.0, 2.0, 3.0], [1.0, 2.0])  # was numpy's broadcast error


def test_bootstrap_means_matches_scipy_on_fixed_data():
    from scipy.stats import bootstrap

    x = np.random.default_rng(3).gamma(2.0, size=37)
    for batch in (None, 1000):
        ref = bootstrap(
            (x,), np.mean, n_resamples=4999, batch=batch, method="percentile", rng=np.random.default_rng(7)
        ).confidence_interval
        _, (lo,), (hi,) = S.bootstrap_means(x, n_resamples=4999, seed=7, batch=batch)
        assert lo == pytest.approx(ref.low, rel=1e-12) and hi == pytest.approx(ref.high, rel=1e-12)
    # statistics of one matrix share the resamples; a missing value is skipped, not zero
    V = np.stack([x, 2 * x + 1, np.where(np.arange(37) == 0, np.nan, x)], 1)
    mean, lo, hi = S.bootstrap_means(V, n_resamples=4999, seed=7)
    assert (lo[0], hi[0]) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert (lo[1], hi[1]) == pytest.approx((2 * ref.low + 1, 2 * ref.high + 1), rel=1e-12)
    assert mean[2] == pytest.approx(x[1:].mean(), rel=1e-14) and lo[2] < mean[2] < hi[2]
    _, lo, hi = S.bootstrap_means(np.full(5, 0.25), n_resamples=99)
    assert (lo[0], hi[0]) == (0.25, 0.25)
    # one value in a column gives no interval (it was [v, v], as certain as can be), as bootstrap_ci
    mean, lo, hi = S.bootstrap_means(np.array([[0.86, 1.0], [np.nan, 2.0]]), n_resamples=99)
    assert mean[0] == 0.86 and np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] < hi[1]
    assert np.isnan(S.bootstrap_ci([0.86]).low)
    # no statistics at all: empty results (was "not enough values to unpack")
    assert [a.shape for a in S.bootstrap_means(np.empty((3, 0)))] == [(0,), (0,), (0,)]
