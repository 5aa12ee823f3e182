"""Statistics over images (and seeds): percentile bootstrap intervals and the Wilcoxon signed-rank test.

The report's findings rest on per-image numbers: a statistic is computed for every image (a
plateau fraction, a growth ratio, a difference between two conditions on the same image), then
summarized by its median over the images with a bootstrap confidence interval, and, where two
conditions are compared on the same images, by a paired Wilcoxon signed-rank test.

* :func:`bootstrap_means` -- means of many per-image columns with percentile intervals from
  shared resamples (NaN-aware; the sweep summary's per-unit statistics);
* :func:`bootstrap_ci` -- percentile bootstrap of a statistic (median by default) of per-image
  values. A 2-D array ``(images, seeds)`` is resampled in two stages (images with replacement,
  then seeds with replacement within every drawn image) and the statistic is taken over the
  per-image means: the interval then covers both sources of randomness.
* :func:`wilcoxon_signed_rank` -- the paired (or one-sample) signed-rank test with SciPy's
  conventions (zeros dropped, average ranks for ties; exact null distribution without ties for
  ``n <= 50``, exhaustive sign flips with ties for ``n <= 13``, else the normal approximation
  with the tie correction and no continuity correction). Both are checked against
  ``scipy.stats.bootstrap`` and ``scipy.stats.wilcoxon`` in the tests.

With ``n`` images the smallest one-sided p-value the signed-rank test can give is ``2^-n``: at
least 5 images are needed to reach ``p < 0.05`` (:func:`min_p_value`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..io.validate import check_int

CONFIDENCE = 0.95
"""Confidence level of every interval in the report."""

N_RESAMPLES = 9999
"""Bootstrap resamples (SciPy's default)."""


@dataclass(frozen=True)
class Estimate:
    """A statistic over images with its bootstrap interval.

    Attributes:
        value: the statistic of the per-image values (of the per-image seed means for 2-D data).
        low, high: the percentile bootstrap interval (NaN with fewer than 2 images).
        n: number of images (finite values) used.
        n_seeds: seeds per image (1 for 1-D data).
        confidence: the interval's confidence level.
    """

    value: float
    low: float
    high: float
    n: int
    n_seeds: int = 1
    confidence: float = CONFIDENCE

    def text(self, fmt: str = ".3g", scale: float = 1.0, unit: str = "") -> str:
        """``value [low, high]`` for the report's text (``scale=100, unit='%'`` for percentages)."""
        v = f"{self.value * scale:{fmt}}{unit}"
        if math.isnan(self.low):
            return f"{v} (no interval: n={self.n})"
        return f"{v} [{self.low * scale:{fmt}}, {self.high * scale:{fmt}}]{unit}"


@dataclass(frozen=True)
class RankTest:
    """A paired (or one-sample) signed-rank test.

    Attributes:
        statistic: ``R+``, the sum of the ranks of the positive differences (SciPy's statistic
            for one-sided alternatives; for ``"two-sided"`` SciPy reports ``min(R+, R-)``).
        p_value: the p-value (1 with no non-zero difference, NaN with no data).
        n: number of non-zero differences.
        method: ``"exact"``, ``"permutation"`` or ``"asymptotic"``.
        alternative: ``"greater"`` (differences tend to be positive), ``"less"`` or ``"two-sided"``.
    """

    statistic: float
    p_value: float
    n: int
    method: str
    alternative: str


def median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The median along an axis (the default statistic)."""
    return np.median(x, axis=axis)


def _clean(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim == 1:
        return a[np.isfinite(a)]
    if a.ndim != 2:
        raise ValueError(f"values: expected a 1-D (images) or 2-D (images, seeds) array, got {a.ndim}-D")
    return a[np.isfinite(a).all(axis=1)]


def bootstrap_ci(
    values,
    statistic: Callable[..., np.ndarray] = median,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap interval of a statistic over images.

    Args:
        values: per-image values ``(n,)``, or ``(n, seeds)`` for a quantity with randomness
            (two-stage resampling: images, then seeds within each drawn image). Rows with a
            non-finite value are dropped.
        statistic: a vectorized function ``f(x, axis=-1)`` (default: the median).
        confidence: the interval's level.
        n_resamples: number of bootstrap resamples.
        seed: seed of the resampling (the report is reproducible).

    Returns:
        an :class:`Estimate`; its interval is NaN with fewer than 2 images.

    Raises:
        ValueError: for a bad confidence level, resample count or array shape.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence!r}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples: expected a positive integer, got {n_resamples!r}")
    a = _clean(values)
    n = a.shape[0]
    seeds = 1 if a.ndim == 1 else a.shape[1]
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, seeds, confidence)
    point = float(statistic(a if a.ndim == 1 else a.mean(axis=1), axis=-1))
    if n < 2:
        return Estimate(point, math.nan, math.nan, n, seeds, confidence)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(int(n_resamples), n))
    if a.ndim == 1:
        sample = a[rows]
    else:
        cols = rng.integers(0, seeds, size=(int(n_resamples), n, seeds))
        sample = a[rows[..., None], cols].mean(axis=-1)
    boot = np.asarray(statistic(sample, axis=-1), dtype=np.float64)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return Estimate(point, float(low), float(high), n, seeds, confidence)


def _ranks(absd: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of ``absd``."""
    order = np.argsort(absd, kind="mergesort")
    ranks = np.empty(absd.size, dtype=np.float64)
    sorted_vals = absd[order]
    i = 0
    while i < absd.size:
        j = i
        while j + 1 < absd.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def _exact_null_counts(n: int) -> np.ndarray:
    """Number of sign patterns with ``R+ = t`` for ``t = 0..n(n+1)/2`` (ranks 1..n, no ties)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def wilcoxon_signed_rank(x, y=None, *, alternative: str = "two-sided") -> RankTest:
    """Wilcoxon signed-rank test of ``d = x - y`` (or of ``x`` alone) against a zero median.

    ``alternative="greater"``: the differences tend to be positive (``x > y``); ``"less"``:
    negative. Pairs with a non-finite value are dropped, zero differences are discarded
    (SciPy's ``zero_method="wilcox"``).

    Args:
        x: per-image values of the first condition, or the differences when ``y`` is ``None``.
        y: per-image values of the second condition (paired with ``x``).
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.

    Raises:
        ValueError: for a bad alternative or arrays of different lengths.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative: expected 'two-sided', 'greater' or 'less', got {alternative!r}")
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    if y is not None:
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        if ya.shape != xa.shape:
            raise ValueError(f"x and y: expected paired arrays of one length, got {xa.size} and {ya.size}")
        d = xa - ya
    else:
        d = xa
    d = d[np.isfinite(d)]
    if d.size == 0:
        return RankTest(math.nan, math.nan, 0, "none", alternative)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return RankTest(0.0, 1.0, 0, "none", alternative)
    ranks = _ranks(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    ties = np.unique(np.abs(d)).size < n
    if not ties and n <= 50:
        counts = _exact_null_counts(n)
        total = 2.0**n
        t = int(round(r_plus))
        sf = counts[t:].sum() / total  # P(R+ >= t)
        cdf = counts[: t + 1].sum() / total  # P(R+ <= t)
        method = "exact"
    elif n <= 13:
        signs = np.array(list(itertools.product((0.0, 1.0), repeat=n)))
        null = signs @ ranks
        eps = 1e-9 * max(1.0, r_plus)
        sf = float(np.mean(null >= r_plus - eps))
        cdf = float(np.mean(null <= r_plus + eps))
        method = "permutation"
    else:
        mean = n * (n + 1) / 4.0
        _, tie_counts = np.unique(np.abs(d), return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(tie_counts**3 - tie_counts)) / 48.0
        z = (r_plus - mean) / math.sqrt(var)
        sf, cdf = _normal_sf(z), _normal_sf(-z)
        method = "asymptotic"
    if alternative == "greater":
        p = sf
    elif alternative == "less":
        p = cdf
    else:
        p = min(1.0, 2.0 * min(sf, cdf))
    return RankTest(r_plus, float(p), n, method, alternative)


def min_p_value(n: int, alternative: str = "greater") -> float:
    """The smallest p-value the signed-rank test can give with ``n`` non-zero differences."""
    if n <= 0:
        return 1.0
    p = 0.5**n
    return min(1.0, 2 * p) if alternative == "two-sided" else p


def theil_sen_slope(x, y) -> float:
    """The median of the pairwise slopes ``(y_j - y_i) / (x_j - x_i)`` (robust trend of ``y`` on ``x``).

    Returns NaN with fewer than 2 distinct ``x``.

    Raises:
        ValueError: ``x`` and ``y`` are not 1-D arrays of the same length.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y: expected 1-D arrays of one length, got shapes {xa.shape} and {ya.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    i, j = np.triu_indices(xa.size, k=1)
    dx = xa[j] - xa[i]
    keep = dx != 0
    if not keep.any():
        return math.nan
    return float(np.median((ya[j] - ya[i])[keep] / dx[keep]))


def bootstrap_means(
    values: np.ndarray,
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means of the columns of ``values`` with percentile bootstrap intervals over the rows.

    Args:
        values: ``(n, S)`` (or ``(n,)``): one row per image, one column per statistic; NaN
            marks a missing value (a column's mean is over its non-NaN rows, in the data and in
            every resample).
        n_resamples: bootstrap resamples.
        confidence: confidence level of the interval.
        seed: seed (or generator) of the resampling.
        batch: resamples drawn per batch (default: all at once up to 4 million indices).

    Returns:
        ``(mean, low, high)``, each ``(S,)`` (scalars' arrays for a 1-D input); NaN where a
        column has no value, and NaN bounds where it has only one (as :func:`bootstrap_ci`:
        one image gives no interval).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"values must be (n,) or (n, S), got shape {x.shape}")
    if not (0 < confidence < 1):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    check_int("n_resamples", n_resamples)
    n, s = x.shape
    mask = np.isfinite(x)
    x0 = np.where(mask, x, 0.0)
    m = mask.astype(np.float64)
    cnt = m.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, x0.sum(0) / np.maximum(cnt, 1), np.nan)
    if n == 0 or s == 0:
        return mean, np.full(s, np.nan), np.full(s, np.nan)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    b = int(batch) if batch else max(1, min(n_resamples, 4_000_000 // n))
    theta = np.empty((n_resamples, s))
    offsets = None
    for k in range(0, n_resamples, b):
        bb = min(b, n_resamples - k)
        idx = rng.integers(0, n, (bb, n))
        if offsets is None or offsets.shape[0] != bb:
            offsets = (np.arange(bb) * n)[:, None]
        counts = np.bincount((idx + offsets).ravel(), minlength=bb * n).reshape(bb, n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            theta[k : k + bb] = (counts @ x0) / (counts @ m)
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
        lo, hi = np.nanpercentile(theta, [100 * alpha, 100 * (1 - alpha)], axis=0)
    lo[cnt < 2], hi[cnt < 2] = np.nan, np.nan
    return mean, lo, hi
