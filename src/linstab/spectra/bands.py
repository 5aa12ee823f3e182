"""``bands``: exact counts of singular values above, inside and below a band and at zero, by
inertia, without computing singular values.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from ..io.profile import timed
from ..io.validate import check_int
from ..linalg.inertia import block_inertia, block_is_pd, partition
from ..linalg.results import PLATEAU, ZERO_TOL, BandCounts, check_op
from ..linalg.threads import torch_threads
from ..operators.base import LinearOperator
from ..operators.factors import factor_plan, structured_plan, unit_factors
from .exact import structured_spectrum
from .reduction import Reduction, factors_js, rank_tol, reduce_unit
from .spectrum import spectrum


def _check_bands_args(thresholds, zero_tol) -> tuple[float, float, float]:
    try:
        lo, hi = (float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise TypeError(f"thresholds must be two numbers (lo, hi), got {thresholds!r}") from None
    zt = float(zero_tol)
    if not (0 < zt < lo <= hi):
        raise ValueError(f"need 0 < zero_tol < lo <= hi, got zero_tol={zt}, thresholds=({lo}, {hi})")
    return lo, hi, zt


def count_from_values(s: torch.Tensor, n: int, lo: float, hi: float, zt: float) -> tuple[int, int, int, int]:
    """Band counts ``(above, plateau, below, zero)`` from computed singular values ``s``.

    Raises:
        ValueError: ``s`` holds NaN or Inf (a NaN compares false with every edge and would be
            counted as zero).
    """
    s = s.to(torch.float64)
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"count_from_values: the singular values hold NaN or Inf: {s.tolist()[:8]}")
    above = int((s > hi).sum())
    plateau = int(((s >= lo) & (s <= hi)).sum())
    below = int(((s > zt) & (s < lo)).sum())
    zero = n - above - plateau - below
    return above, plateau, below, zero


def _from_inertia(
    n: int, edges: tuple[float, float, float], C: dict[str, tuple[int, int]], **extra
) -> BandCounts:
    """Band counts from ``C[edge] = (#(s > t), #(s = t))`` at the edges ``lo``, ``hi``, ``zt``."""
    lo, hi, zt = edges
    above = C["hi"][0]
    plateau = C["lo"][0] + C["lo"][1] - above
    below = C["zt"][0] - C["lo"][0] - C["lo"][1]
    zero = n - above - plateau - below
    return BandCounts(
        n=n, thresholds=(lo, hi), zero_tol=zt, above=above, plateau=plateau, below=below, zero=zero, **extra
    )


def bands(
    op: LinearOperator,
    thresholds: tuple[float, float] = PLATEAU,
    zero_tol: float = ZERO_TOL,
    *,
    route: str = "auto",
    min_block: int = 384,
    threads: int | None = None,
    exact_ones: bool = True,
) -> BandCounts:
    """Exact counts of singular values above, inside and below ``[lo, hi]`` and at zero.

    Units with ReLU masks are counted by Sylvester's law of inertia, without singular values:

    * identity shortcut (``"inertia-structured"``): ``#(s > t) = #pos(-c I_m) + #pos(N(c)) - r``
      with ``c = t^2 - alpha^2`` and the sparse ``2r x 2r`` matrix
      ``N(c) = Q^T Q / c - M^{-1}`` (Haynsworth inertia additivity on
      ``[[-c I, Q], [Q^T, -M^{-1}]]``);
    * any shortcut (``"inertia-gram"``): ``#(s > t) = #pos(J_S J_S^T - t^2 I)`` with the sparse
      Gram of the active rows.

    Both matrices are banded after ordering unknowns by spatial position and are factored by
    block ``LDL^T`` (see :func:`block_inertia`); all in float64. Other operators fall back to
    an exact spectrum (``"spectrum-<route>"``).

    Args:
        op: the operator.
        thresholds: ``(lo, hi)`` of the plateau band (paper: ``(0.99, 1.01)``).
        zero_tol: singular values ``<= zero_tol`` count as zero.
        route: ``"auto"``, ``"structured"``, ``"gram"`` or ``"spectrum"``.
        min_block: smallest diagonal block of the block ``LDL^T``.
        threads: torch threads while counting (default ``None``: torch's setting; on a
            machine shared with other jobs use 1; measurements in docs/spectra.md).
        exact_ones: identity-shortcut units: also count the values exactly ``|alpha|``
            (``n_exact_ones``) when the structure does not give them for free (a rank-deficient
            ``Q``), which takes the whole spectrum (tens of seconds on a 16,384-value unit);
            ``False``: ``n_exact_ones`` is ``None`` then. The band counts are the same.

    Returns:
        a :class:`BandCounts`.
    """
    check_op(op)
    lo, hi, zt = _check_bands_args(thresholds, zero_tol)
    if route not in ("auto", "structured", "gram", "spectrum"):
        raise ValueError(f"route must be 'auto', 'structured', 'gram' or 'spectrum', got {route!r}")
    check_int("threads", threads, optional=True)
    check_int("min_block", min_block)
    with torch_threads(threads), timed("bands", n=int(min(op.shape))) as info:
        res = _bands(op, lo, hi, zt, route, min_block, bool(exact_ones))
        info["route"] = res.route
    return res


def _bands(
    op: LinearOperator, lo: float, hi: float, zt: float, route: str, min_block: int, exact_ones: bool
) -> BandCounts:
    t0 = time.perf_counter()
    n_out, n_in = op.shape
    n = min(n_out, n_in)
    ok, why = structured_plan(op)
    has_factors = factor_plan(op)[0] is not None
    if route == "structured" and not ok:
        raise ValueError(f"no structured reduction for this operator: {why}")
    if route == "gram" and not has_factors:
        raise ValueError(f"route='gram' needs a unit with ReLU masks: {factor_plan(op)[1]}")
    use_struct = ok and route in ("auto", "structured")
    if use_struct:
        f = unit_factors(op)
        if f.alpha == 0:
            use_struct = False  # the inertia formula needs M invertible
            if route == "structured":
                raise ValueError("route='structured' needs alpha != 0")
    if use_struct:
        red = reduce_unit(f)
        t1 = time.perf_counter()
        # a threshold at |alpha| (c = 0) is counted just above and below it: the values equal
        # to |alpha| are the structural plateau, every other value is separated from it
        a = abs(f.alpha)
        at = [abs(t - a) <= 1e-12 * max(a, 1.0) for t in (zt, lo, hi)]
        ts = [t for t, on in zip((zt, lo, hi), at, strict=True) if not on]
        if any(at):
            ts += [a * (1 + 1e-9), a * (1 - 1e-9)]
        counts, n_exact = _structured_counts(red, tuple(ts), min_block)
        if n_exact is None and exact_ones:
            n_exact = structured_spectrum(op, torch.float64).n_exact_ones
        got = dict(zip(ts, counts, strict=True))
        C = {}
        for name, t, on in zip(("zt", "lo", "hi"), (zt, lo, hi), at, strict=True):
            if on:
                above_a = got[a * (1 + 1e-9)][0]
                C[name] = (above_a, got[a * (1 - 1e-9)][0] - above_a)
            else:
                C[name] = got[t]
        return _from_inertia(
            n,
            (lo, hi, zt),
            C,
            n_exact_ones=n_exact,
            alpha=f.alpha,
            route="inertia-structured",
            timings={
                "factors": f.seconds,
                "reduce": red.seconds,
                "inertia": time.perf_counter() - t1,
                "total": time.perf_counter() - t0,
            },
        )
    if has_factors and route in ("auto", "gram"):
        f = unit_factors(op)
        t1 = time.perf_counter()
        JS = factors_js(f)
        GG = (JS @ JS.T).tocsr()
        keys = f.out_keys[f.out_active]
        perm = np.lexsort((np.arange(keys.size), keys))
        Gp = GG[perm][:, perm].tocsr()
        bounds = partition(Gp, min_block)
        eye = sp.identity(Gp.shape[0], format="csr")
        t2 = time.perf_counter()
        C = {}
        for name, t in (("zt", zt), ("lo", lo), ("hi", hi)):
            p, _, z = block_inertia((Gp - (t * t) * eye).tocsr(), bounds)
            C[name] = (p, z)
        return _from_inertia(
            n,
            (lo, hi, zt),
            C,
            route="inertia-gram",
            timings={
                "factors": f.seconds,
                "gram": t2 - t1,
                "inertia": time.perf_counter() - t2,
                "total": time.perf_counter() - t0,
            },
        )
    res = spectrum(op, "exact", dtype=torch.float64)
    above, plateau, below, zero = count_from_values(res.values, n, lo, hi, zt)
    return BandCounts(
        n=n,
        thresholds=(lo, hi),
        zero_tol=zt,
        above=above,
        plateau=plateau,
        below=below,
        zero=zero,
        n_exact_ones=res.n_exact_ones,
        alpha=res.alpha,
        route=f"spectrum-{res.route}",
        timings={"total": time.perf_counter() - t0},
    )


def _structured_counts(red: Reduction, ts: tuple[float, ...], min_block: int):
    """``(#(s > t), #(s == t))`` for each ``t`` over the active rows, and the exact-alpha count."""
    r, m, alpha = red.r, red.m, red.alpha
    if r == 0:
        return [((m if t < abs(alpha) else 0), 0) for t in ts], m
    I_r = sp.identity(r, format="csr")
    # spatial order, U and W unknowns of one inner unit side by side
    keys = np.concatenate([red.keys, red.keys])
    typ = np.concatenate([np.zeros(r, np.int64), np.ones(r, np.int64)])
    perm = np.lexsort((typ, np.arange(2 * r) % r, keys))
    pattern = sp.bmat([[abs(red.G11) + I_r, abs(red.G12) + I_r], [None, abs(red.G22) + abs(red.A)]])
    pattern = (pattern + pattern.T).tocsr()[perm][:, perm].tocsr()
    bounds = partition(pattern, min_block)
    G = sp.bmat([[red.G11, red.G12], [red.G12.T, red.G22]]).tocsr()
    Minv = sp.bmat([[None, I_r / alpha], [I_r / alpha, -red.A / alpha**2]]).tocsr()
    out = []
    for t in ts:
        c = t * t - alpha * alpha
        N = (G / c - Minv).tocsr()[perm][:, perm].tocsr()
        p, _, z = block_inertia(N, bounds)
        out.append(((m if c < 0 else 0) + p - r, z))
    if 2 * r >= m:
        return out, 0  # no structural plateau (the structural count m - 2r is not positive)
    # Q of full column rank (G positive definite): exactly m - 2r values equal |alpha|
    if block_is_pd(G[perm][:, perm].tocsr(), bounds, rank_tol(G)):
        return out, m - 2 * r
    return out, None  # rank-deficient Q: the core may hold more exact |alpha| values
