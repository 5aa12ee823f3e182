"""Trends of band fractions along the units (the bullet points under the paper's Figure 2).

For one image, the fraction of singular values in a band (``frac_above``, ``frac_plateau``,
``frac_zero``, ...) is a sequence over the regular units of a stage. Its trend is the robust
(Theil-Sen) slope against the unit's position scaled to [0, 1] over the stage -- the fitted
change from the first to the last regular unit -- and its relative change that slope divided
by the fitted value at the first unit. Down-sampling and projection units are left out: their
spectra differ by construction (Figure 1, middle row). Over several images, the per-image slopes
are what the report's bootstrap and signed-rank test work on.
"""

from __future__ import annotations

import math

import numpy as np

from .statistics import theil_sen_slope


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope = theil_sen_slope(x, y)
    if math.isnan(slope):
        return math.nan, math.nan
    start = float(np.median(y - slope * x))
    rel = slope / start if start > 0 else math.nan
    return slope, rel


def regular_units(rows: list[dict], stage: int) -> list[dict]:
    """The rows of the regular units of ``stage``, in unit order."""
    rs = [r for r in rows if int(r["stage"]) == stage and r["kind"] == "regular"]
    return sorted(rs, key=lambda r: int(r["unit"]))


def stage_trend(rows: list[dict], band: str, stage: int) -> dict:
    """The trend of ``frac_<band>`` over the regular units of one stage at one image.

    Args:
        rows: band rows of one image (fields ``stage``, ``unit``, ``kind``, ``frac_<band>``).
        band: ``above``, ``plateau``, ``below``, ``zero`` or ``exact_ones``.
        stage: the stage.

    Returns:
        ``{"slope", "relative_change", "first", "last", "n_units"}`` (NaN slopes with fewer than
        2 regular units).
    """
    rs = regular_units(rows, stage)
    y = np.array([float(r[f"frac_{band}"]) for r in rs], dtype=np.float64)
    n = len(rs)
    if n < 2:
        return {
            "slope": math.nan,
            "relative_change": math.nan,
            "first": math.nan,
            "last": math.nan,
            "n_units": n,
        }
    x = np.linspace(0.0, 1.0, n)
    slope, rel = _fit(x, y)
    return {"slope": slope, "relative_change": rel, "first": float(y[0]), "last": float(y[-1]), "n_units": n}


def network_trend(rows: list[dict], band: str) -> dict:
    """The trend of ``frac_<band>`` over all regular units of the network at one image (the
    position scaled to [0, 1] from the first to the last regular unit).
    """
    rs = sorted((r for r in rows if r["kind"] == "regular"), key=lambda r: (int(r["stage"]), int(r["unit"])))
    n = len(rs)
    if n < 2:
        return {"slope": math.nan, "relative_change": math.nan, "n_units": n}
    y = np.array([float(r[f"frac_{band}"]) for r in rs], dtype=np.float64)
    slope, rel = _fit(np.linspace(0.0, 1.0, n), y)
    return {"slope": slope, "relative_change": rel, "n_units": n}


def by_image(rows: list[dict]) -> dict[str, list[dict]]:
    """Band rows grouped by their ``image`` field (first-seen order)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(str(r["image"]), []).append(r)
    return out
