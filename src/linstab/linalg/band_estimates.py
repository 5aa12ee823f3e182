"""Band counts of singular values with confidence intervals, matrix-free (SLQ + Radau bounds).

The paper's bands (Figure 2) with thresholds ``(lo, hi)`` and ``zero_tol = zt``: ``above`` =
``#(s > hi)``, ``plateau`` = ``#(lo <= s <= hi)``, ``below`` = ``#(zt < s < lo)``, ``zero`` =
``#(s <= zt)``. Each is the trace of a spectral projector of the Gram ``A``:
``#(s^2 in I) = tr 1_I(A)``, estimated by Hutchinson with Rademacher probes ``z`` on the probe
space: the per-probe sample ``z^T 1_I(A) z`` is a difference of the probe's spectral
distribution function ``F_z`` at the edges ``zt^2, lo^2, hi^2``.

What the interval covers:

1. Quadrature error, rigorously. ``F_z`` at each edge is bracketed by the
   Chebyshev-Markov-Stieltjes inequalities of the Gauss-Radau rule with a node at the edge
   (:func:`~linstab.linalg.quadrature.radau_bounds`): the sample lies in ``[l_z, u_z]`` for
   every measure with the moments ``k`` Lanczos steps determine. No smoothing of the
   indicator is involved, so a plateau of values exactly at 1 cannot leak into neighbouring
   bands beyond these bounds (the bracket width is the Christoffel function at the edge:
   about the number of singular values within one Gauss node spacing of the edge).
2. Rounding: eigenvalues within ``rounding_margin`` (default ``100 eps lambda_max`` in the
   operator's dtype) of an edge are treated as undecidable (the bracket is taken at
   ``edge -+ margin``). In float32 this makes ``s`` below about ``1e-2 sqrt(lambda_max)`` hard
   to tell from zero unless it is a structural zero.
3. Sampling error, at the stated level: the probes are i.i.d., so a one-sided t (or
   percentile-bootstrap) bound at level ``1 - (1 - confidence) / 2`` on the mean of the
   lower brackets ``l_z`` and one on the upper brackets ``u_z`` give a two-sided interval of
   level ``>= confidence`` (Bonferroni), asymptotically in ``N``.

What it does not cover: the t/bootstrap approximation itself for few probes (heavy-tailed
samples), Lanczos in finite precision beyond the rounding margin (Greenbaum's clusters are
assumed narrower than it), and inexact deflated triplets (``deflate``).

Exact parts (see :mod:`linstab.linalg.exact_parts`): structural zeros are never estimated (probes live
on the active rows; the count ``n - p`` is added to ``zero`` with no uncertainty). Values known
to equal ``|alpha|`` exactly are not projected out (that needs a basis of an ``m - 2r``
dimensional space, ``O(n^2)`` memory); they are harmless by point 1 (their atom sits strictly
inside the plateau band and only enters through the rigorous bounds at the edges), and their
count lower bound clips the intervals (the band holding ``|alpha|`` has at least that many
values, the others at most ``p`` minus it). An operator whose estimated part is trivial (e.g.
all non-structural values equal to 1) gives Lanczos runs that end in an invariant subspace: the
quadrature is then exact and the interval collapses to the exact count.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..io.validate import check_int, is_real
from ..operators import LinearOperator
from .lanczos import _check_op
from .quadrature import largest_ritz, radau_bounds
from .results import BANDS, PLATEAU, ZERO_TOL, SpectrumResult
from .slq import DEFAULT_PROBES, DEFAULT_RESOLUTION, AccuracyWarning, SLQResult, slq

__all__ = ["BANDS", "BandInterval", "BandEstimate", "band_estimate", "estimate_bands", "steps_rule"]

DEFAULT_ACCURACY = 0.01
"""Target half-width of the adaptive step rule (fraction of ``n``) when none is given."""

INTERVALS = ("t", "bootstrap")


@dataclass
class BandInterval:
    """An estimated band count with its confidence interval.

    Attributes:
        estimate: point estimate (probe mean of the bracket midpoints, plus exact parts;
            the four estimates sum to ``n`` unless clipped into their intervals).
        lower, upper: the confidence interval (quadrature bounds + sampling error + rounding),
            rounded outwards to integers (counts are integers).
        stat_halfwidth: sampling half-width of the midpoints alone (t or bootstrap).
        quad_halfwidth: mean half-width of the per-probe quadrature brackets.
        exact: the part of the count known exactly and included (structural zeros for
            ``zero``; 0 otherwise).
    """

    estimate: float
    lower: float
    upper: float
    stat_halfwidth: float
    quad_halfwidth: float
    exact: int = 0

    def contains(self, count: float, tol: float = 1e-9) -> bool:
        """Whether ``lower <= count <= upper`` (up to ``tol``)."""
        return self.lower - tol <= count <= self.upper + tol

    def to_dict(self) -> dict:
        """The interval as a JSON-able dict."""
        return {
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "stat_halfwidth": self.stat_halfwidth,
            "quad_halfwidth": self.quad_halfwidth,
            "exact": self.exact,
        }


@dataclass
class BandEstimate:
    """Estimated band counts of an operator's ``n`` singular values, with intervals.

    Attributes:
        n: number of singular values ``min(n_out, n_in)``.
        thresholds: ``(lo, hi)``.
        zero_tol: ``zt``.
        confidence: interval level.
        interval: ``"t"`` or ``"bootstrap"``.
        above, plateau, below, zero: the :class:`BandInterval` of each band.
        n_probes: probes ``N``.
        lanczos_steps: steps ``k``.
        n_probe_space: ``p`` (Gram eigenvalues estimated).
        n_structural_zero: exact zeros ``n - p`` (included in ``zero``).
        plateau_value: value known to occur exactly (``|alpha|``), or ``None``.
        n_exact_plateau: lower bound of its multiplicity (used to clip the intervals).
        side: Gram side (``"left"``/``"right"``).
        reorth: Lanczos reorthogonalization.
        dtype: the operator's dtype (name).
        rounding_margin: the margin in ``s^2`` around each edge treated as undecidable.
        samples: per band, ``(N, 3)`` float64 per-probe lower bound, midpoint and upper
            bound of the probe-space count (structural zeros not included).
        timings: seconds per phase.
        max_steps: the step cap of the adaptive rule (``None``: the steps were fixed).
    """

    n: int
    thresholds: tuple[float, float]
    zero_tol: float
    confidence: float
    interval: str
    above: BandInterval
    plateau: BandInterval
    below: BandInterval
    zero: BandInterval
    n_probes: int
    lanczos_steps: int
    n_probe_space: int
    n_structural_zero: int
    plateau_value: float | None
    n_exact_plateau: int
    side: str
    reorth: str
    dtype: str
    rounding_margin: float
    samples: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    max_steps: int | None = None

    def band(self, name: str) -> BandInterval:
        """The :class:`BandInterval` of ``"above"``, ``"plateau"``, ``"below"`` or ``"zero"``."""
        if name not in BANDS:
            raise ValueError(f"band must be one of {BANDS}, got {name!r}")
        return getattr(self, name)

    @property
    def counts(self) -> dict[str, float]:
        """Point estimates per band."""
        return {b: self.band(b).estimate for b in BANDS}

    @property
    def fractions(self) -> dict[str, float]:
        """Point estimates as fractions of ``n``."""
        return {b: v / max(self.n, 1) for b, v in self.counts.items()}

    def covers(self, counts) -> dict[str, bool]:
        """Whether each interval contains the given counts.

        Args:
            counts: a :class:`linstab.spectra.BandCounts` or a dict band -> count.

        Returns:
            dict band -> bool.
        """
        c = counts.counts if hasattr(counts, "counts") and not isinstance(counts, dict) else counts
        return {b: self.band(b).contains(float(c[b])) for b in BANDS}

    def to_dict(self) -> dict:
        """Everything but the per-probe samples, JSON-serializable."""
        return {
            "n": self.n,
            "thresholds": list(self.thresholds),
            "zero_tol": self.zero_tol,
            "confidence": self.confidence,
            "interval": self.interval,
            **{b: self.band(b).to_dict() for b in BANDS},
            "fractions": self.fractions,
            "n_probes": self.n_probes,
            "lanczos_steps": self.lanczos_steps,
            "max_steps": self.max_steps,
            "n_probe_space": self.n_probe_space,
            "n_structural_zero": self.n_structural_zero,
            "plateau_value": self.plateau_value,
            "n_exact_plateau": self.n_exact_plateau,
            "side": self.side,
            "reorth": self.reorth,
            "dtype": self.dtype,
            "rounding_margin": self.rounding_margin,
            "timings": dict(self.timings),
        }


def _check_thresholds(thresholds, zero_tol) -> tuple[float, float, float]:
    try:
        lo, hi = (float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise TypeError(f"thresholds must be two numbers (lo, hi), got {thresholds!r}") from None
    try:
        zt = float(zero_tol)
    except (TypeError, ValueError):
        raise TypeError(f"zero_tol must be a number, got {zero_tol!r}") from None
    if not all(math.isfinite(v) for v in (lo, hi, zt)) or not (0 < zt < lo <= hi):
        raise ValueError(f"need 0 < zero_tol < lo <= hi (finite), got zero_tol={zt}, thresholds=({lo}, {hi})")
    return lo, hi, zt


def _check_interval_args(confidence, interval, n_boot, rounding_margin) -> None:
    """The interval arguments of :func:`band_estimate` (checked before any Lanczos run)."""
    if not is_real(confidence) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    check_int("n_boot", n_boot, 10)
    if rounding_margin is not None and not (
        is_real(rounding_margin) and math.isfinite(rounding_margin) and rounding_margin >= 0
    ):
        raise ValueError(f"rounding_margin must be a finite number >= 0 (or None), got {rounding_margin!r}")


def _edge_bounds(res: SLQResult, t: float, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-probe ``(lo, hi)`` with ``lo <= F(t - 0) <= F(t) <= hi`` (unnormalized counts)."""
    lan = res.lanczos
    if margin > 1e-8 * max(t, 1e-300):
        lo, _ = radau_bounds(lan, t - margin)
        _, hi = radau_bounds(lan, t + margin)
    else:
        lo, hi = radau_bounds(lan, t)
    if res.deflated_values is not None:
        v, w = res.deflated_values, res.deflated_weights
        lo = lo + (w * (v < t - margin)).sum(dim=1)
        hi = hi + (w * (v <= t + margin)).sum(dim=1)
    return lo, hi


def _interval(
    lo_s: torch.Tensor,
    hi_s: torch.Tensor,
    mid: torch.Tensor,
    confidence: float,
    kind: str,
    n_boot: int,
    seed: int,
) -> tuple[float, float, float]:
    N = lo_s.numel()
    if kind == "t":
        from scipy.stats import t as student  # imported here: scipy.stats takes 0.5 s to import

        tq = float(student.ppf(0.5 + confidence / 2, N - 1))
        se = math.sqrt(1.0 / N)
        lower = float(lo_s.mean()) - tq * float(lo_s.std()) * se
        upper = float(hi_s.mean()) + tq * float(hi_s.std()) * se
        half = tq * float(mid.std()) * se
        return lower, upper, half
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N, (n_boot, N), generator=g)
    a = (1 - confidence) / 2
    ml, mh, mm = lo_s[idx].mean(dim=1), hi_s[idx].mean(dim=1), mid[idx].mean(dim=1)
    q = torch.tensor([a, 1 - a], dtype=torch.float64)
    lower = float(torch.quantile(ml, a))
    upper = float(torch.quantile(mh, 1 - a))
    qm = torch.quantile(mm, q)
    return lower, upper, float(qm[1] - qm[0]) / 2


def _band_samples(res: SLQResult, edges: tuple[float, float, float], rounding_margin: float | None):
    """Per-probe brackets ``(lower, upper)`` of each band's probe-space count.

    Args:
        res: SLQ runs (a partial result is enough: only ``lanczos``, ``exact``, ``dtype`` and
            the deflation are read).
        edges: ``(lo, hi, zt)`` in units of ``s``.
        rounding_margin: see :func:`band_estimate` (``None``: ``100 eps lambda_max``).

    Returns:
        ``(per, margin)``: band -> ``(lower, mid, upper)``, each ``(N,)`` float64: the brackets
        clipped to ``[0, |z|^2]`` and the unclipped midpoints (the midpoints of the four bands
        sum to ``|z|^2``); the margin used.
    """
    lo, hi, zt = edges
    if rounding_margin is None:
        theta, resid = largest_ritz(res.lanczos)
        lam_max = max(float((theta + resid).max()) if theta.numel() else 0.0, 1.0)
        if res.deflated_values is not None and res.deflated_values.numel():
            lam_max = max(lam_max, float(res.deflated_values.max()))
        rounding_margin = 100 * torch.finfo(res.dtype).eps * lam_max
    mu0 = res.lanczos.start_norm**2
    if res.deflated_weights is not None:
        mu0 = mu0 + res.deflated_weights.sum(dim=1)
    lZ, hZ = _edge_bounds(res, zt * zt, rounding_margin)
    lL, hL = _edge_bounds(res, lo * lo, rounding_margin)
    lH, hH = _edge_bounds(res, hi * hi, rounding_margin)
    raw = {
        "above": (mu0 - hH, mu0 - lH),
        "plateau": (lH - hL, hH - lL),
        "below": (lL - hZ, hL - lZ),
        "zero": (lZ, hZ),
    }
    per = {}
    for name, (l_s, u_s) in raw.items():
        mid = (l_s + u_s) / 2
        l_s, u_s = l_s.clamp(0, None), torch.minimum(u_s, mu0)
        per[name] = (l_s, mid, torch.maximum(u_s, l_s))
    return per, float(rounding_margin)


def steps_rule(
    n: int,
    thresholds=PLATEAU,
    zero_tol: float = ZERO_TOL,
    *,
    accuracy: float = 0.01,
    confidence: float = 0.95,
    rounding_margin: float | None = None,
):
    """The adaptive stopping rule of :func:`estimate_bands` (``steps=None``).

    Lanczos stops once, for every band, the quadrature half-width (mean per-probe bracket)
    is at most ``max(accuracy n - s, s / 2)``, with ``s`` the band's sampling half-width (t
    interval of the probe midpoints at ``confidence``): the interval then meets the target
    half-width ``accuracy n``, or more steps would shrink it by less than a third because the
    probes' spread dominates. The brackets are rigorous at any step count, so stopping early
    never invalidates an interval; it only widens it.

    Args:
        n: number of singular values the accuracy refers to.
        thresholds: ``(lo, hi)`` of the plateau band.
        zero_tol: zero threshold.
        accuracy: target half-width as a fraction of ``n``.
        confidence: interval level.
        rounding_margin: see :func:`band_estimate`.

    Returns:
        ``stop(partial SLQResult) -> bool`` for :func:`~linstab.linalg.slq.slq`.
    """
    lo, hi, zt = _check_thresholds(thresholds, zero_tol)
    if not 0 < accuracy < 1:
        raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
    target = accuracy * n

    def stop(res: SLQResult) -> bool:
        if res.n_probes < 2:
            return False
        per, _ = _band_samples(res, (lo, hi, zt), rounding_margin)
        for l_s, mid, u_s in per.values():
            quad = float((u_s - l_s).mean()) / 2
            stat = _interval(l_s, u_s, mid, confidence, "t", 0, 0)[2]
            if quad > max(target - stat, stat / 2):
                return False
        return True

    return stop


def band_estimate(
    res: SLQResult,
    thresholds=PLATEAU,
    zero_tol: float = ZERO_TOL,
    *,
    confidence: float = 0.95,
    interval: str = "t",
    n_boot: int = 2000,
    seed: int = 0,
    rounding_margin: float | None = None,
    warn: bool = True,
    _stacklevel: int = 2,
) -> BandEstimate:
    """Band counts with confidence intervals from an :class:`~linstab.linalg.slq.SLQResult`.

    See the module docstring for the method and what the interval covers.

    Args:
        res: SLQ runs of the operator (``N >= 2`` probes).
        thresholds: ``(lo, hi)`` of the plateau band (paper: ``(0.99, 1.01)``).
        zero_tol: singular values ``<= zero_tol`` count as zero (paper: ``1e-6``).
        confidence: interval level in ``(0, 1)``.
        interval: ``"t"`` (Student t on the per-probe brackets) or ``"bootstrap"``
            (percentile bootstrap of their means, ``n_boot`` resamples).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        rounding_margin: width in ``s^2`` around each edge treated as undecidable (default
            ``100 eps lambda_max``; 0 disables).
        warn: emit an :class:`~linstab.linalg.slq.AccuracyWarning` when the quadrature part of
            an interval dominates (half-width above ``max(sampling half-width, 0.01 n)``).

    Returns:
        a :class:`BandEstimate`.

    Raises:
        TypeError: ``res`` is not an SLQResult, or thresholds are not numbers.
        ValueError: fewer than 2 probes, bad thresholds, confidence or interval kind.
    """
    t0 = time.perf_counter()
    if not isinstance(res, SLQResult):
        raise TypeError(f"expected an SLQResult (from linalg.slq), got {type(res).__name__}")
    lo, hi, zt = _check_thresholds(thresholds, zero_tol)
    _check_interval_args(confidence, interval, n_boot, rounding_margin)
    N = res.n_probes
    if N < 2:
        raise ValueError(f"a confidence interval needs at least 2 probes, got n_probes={N}")
    ex = res.exact
    p = ex.n_probe_space
    per, rounding_margin = _band_samples(res, (lo, hi, zt), rounding_margin)
    v = ex.plateau_value
    home = None
    if v is not None and ex.n_exact_plateau > 0:
        home = "above" if v > hi else "plateau" if v >= lo else "below" if v > zt else "zero"
    # the weights come from coefficients computed in the operator's dtype: allow for their
    # rounding before the (integer) counts are bracketed
    mass_tol = 100 * torch.finfo(res.dtype).eps * max(p, 1)
    bands, samples = {}, {}
    warn_msgs = []
    for name in BANDS:
        l_s, mid, u_s = per[name]
        samples[name] = torch.stack([l_s, mid, u_s], dim=1)
        lower, upper, stat = _interval(l_s, u_s, mid, confidence, interval, n_boot, seed)
        add = ex.n_structural_zero if name == "zero" else 0
        cap = p
        floor = 0.0
        if home is not None:
            if name == home:
                floor = float(ex.n_exact_plateau)
            else:
                cap = p - ex.n_exact_plateau
        # counts are integers: round the interval outwards (after the rounding allowance)
        lower = float(math.ceil(min(max(lower, floor), cap) - mass_tol)) + add
        upper = float(math.floor(max(min(upper, cap), floor) + mass_tol)) + add
        lower = max(lower, floor + add)
        est = min(max(float(mid.mean()) + add, lower), upper)
        quad = float((u_s - l_s).mean()) / 2
        bands[name] = BandInterval(est, lower, upper, stat, quad, add)
        if quad > max(stat, 0.01 * res.n):
            warn_msgs.append(f"{name}: quadrature +-{quad:.1f} vs sampling +-{stat:.1f}")
    # an adaptive run that stopped before its cap met its own target (steps_rule)
    met = res.max_steps is not None and res.lanczos_steps < res.max_steps
    if warn and warn_msgs and not met:
        more = "increase steps"
        if res.max_steps is not None:
            more = "the step cap was reached (a smaller resolution allows more)"
        warnings.warn(
            f"band intervals are dominated by quadrature uncertainty at the band edges "
            f"(k={res.lanczos_steps} Lanczos steps; {'; '.join(warn_msgs)}): {more}",
            AccuracyWarning,
            stacklevel=_stacklevel,
        )
    return BandEstimate(
        n=res.n,
        thresholds=(lo, hi),
        zero_tol=zt,
        confidence=confidence,
        interval=interval,
        above=bands["above"],
        plateau=bands["plateau"],
        below=bands["below"],
        zero=bands["zero"],
        n_probes=N,
        lanczos_steps=res.lanczos_steps,
        n_probe_space=p,
        n_structural_zero=ex.n_structural_zero,
        plateau_value=v,
        n_exact_plateau=ex.n_exact_plateau,
        side=res.lanczos.side,
        reorth=res.lanczos.reorth,
        dtype=str(res.dtype).replace("torch.", ""),
        rounding_margin=float(rounding_margin),
        samples=samples,
        timings={"bounds": time.perf_counter() - t0, **{f"slq_{k}": v for k, v in res.timings.items()}},
        max_steps=res.max_steps,
    )


def estimate_bands(
    op: LinearOperator,
    thresholds=PLATEAU,
    zero_tol: float = ZERO_TOL,
    *,
    n_probes: int | None = None,
    steps: int | None = None,
    accuracy: float | None = None,
    resolution: float = DEFAULT_RESOLUTION,
    confidence: float = 0.95,
    interval: str = "t",
    seed: int = 0,
    reorth: str = "none",
    exact="auto",
    deflate: SpectrumResult | None = None,
    rounding_margin: float | None = None,
    warn: bool = True,
) -> BandEstimate:
    """Matrix-free band counts of ``op``'s singular values with confidence intervals.

    :func:`~linstab.linalg.slq.slq` (``N`` probes, ``k`` Lanczos steps on the Gram of the
    active rows) followed by :func:`band_estimate`. The exact counterpart is
    :func:`linstab.spectra.bands` (same thresholds and conventions).

    Args:
        op: the operator ``J``.
        thresholds: ``(lo, hi)``.
        zero_tol: zero threshold.
        n_probes: probes ``N >= 2`` (default: from ``accuracy`` if given, else 16).
        steps: Lanczos steps. Default: adaptive -- the runs stop as soon as every band's
            interval meets the target half-width ``accuracy n`` or its quadrature part no
            longer dominates (:func:`steps_rule`, checked at 16, 32, 64, ... steps), at most
            the steps of :func:`~linstab.linalg.slq.choose_parameters` with ``resolution``.
        accuracy: target half-width as a fraction of ``n``: chooses ``n_probes`` (sampling
            part) when they are not given, and is the adaptive rule's target (default 0.01).
        resolution: node spacing near ``s = 1`` that sets the cap of the adaptive steps.
        confidence: interval level.
        interval: ``"t"`` or ``"bootstrap"``.
        seed: probe seed.
        reorth: Lanczos reorthogonalization (``"none"``, ``"selective"``, ``"full"``).
        exact: ``"auto"``, ``None`` or an :class:`~linstab.linalg.exact.ExactParts`.
        deflate: optional top singular triplets with vectors, counted exactly.
        rounding_margin: see :func:`band_estimate`.
        warn: see :func:`band_estimate`.

    Returns:
        a :class:`BandEstimate`.
    """
    if n_probes is not None and not isinstance(n_probes, bool) and isinstance(n_probes, int) and n_probes < 2:
        raise ValueError(f"a confidence interval needs n_probes >= 2, got {n_probes}")
    if n_probes is None and accuracy is None:
        n_probes = DEFAULT_PROBES
    _check_op(op)
    _check_thresholds(thresholds, zero_tol)
    _check_interval_args(confidence, interval, 2000, rounding_margin)
    stop = None
    if steps is None:
        stop = steps_rule(
            min(op.shape),
            thresholds,
            zero_tol,
            accuracy=DEFAULT_ACCURACY if accuracy is None else accuracy,
            confidence=confidence,
            rounding_margin=rounding_margin,
        )
    res = slq(
        op,
        n_probes=n_probes,
        steps=steps,
        accuracy=accuracy,
        confidence=confidence,
        resolution=resolution,
        seed=seed,
        reorth=reorth,
        exact=exact,
        deflate=deflate,
        stop=stop,
    )
    return band_estimate(
        res,
        thresholds,
        zero_tol,
        confidence=confidence,
        interval=interval,
        seed=seed,
        rounding_margin=rounding_margin,
        warn=warn,
        _stacklevel=3,
    )
