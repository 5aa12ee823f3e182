"""Trends of band fractions along the units, and image dependence against architecture changes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linstab.analyses.image_dependence import image_vs_architecture, spectrum_distance
from linstab.analyses.trends import by_image, network_trend, regular_units, stage_trend


def rows(image, stage, fracs, kinds=None):
    kinds = kinds or ["regular"] * len(fracs)
    return [
        {"image": image, "stage": stage, "unit": k + 1, "kind": kind, "frac_plateau": f}
        for k, (f, kind) in enumerate(zip(fracs, kinds, strict=True))
    ]


def test_stage_trend_is_the_fitted_change_over_the_regular_units():
    r = rows("a", 3, [0.9, 0.4, 0.3, 0.2, 0.1], ["downsampling", "regular", "regular", "regular", "regular"])
    t = stage_trend(r, "plateau", 3)
    # the down-sampling unit is left out; a straight line from 0.4 to 0.1 over the stage
    assert t["n_units"] == 4 and t["slope"] == pytest.approx(-0.3)
    assert t["relative_change"] == pytest.approx(-0.75) and t["first"] == 0.4
    assert [u["unit"] for u in regular_units(r, 3)] == [2, 3, 4, 5]
    # robust: one outlier does not change the slope of a straight line
    r2 = rows("a", 1, [0.1, 0.2, 0.9, 0.4, 0.5])
    assert stage_trend(r2, "plateau", 1)["slope"] == pytest.approx(0.4)
    assert math.isnan(stage_trend(rows("a", 2, [0.5]), "plateau", 2)["slope"])


def test_network_trend_and_grouping():
    r = (
        rows("a", 1, [0.5, 0.4])
        + rows("a", 2, [0.3, 0.2])
        + rows("b", 1, [0.1, 0.1])
        + rows("b", 2, [0.1, 0.1])
    )
    per = by_image(r)
    assert list(per) == ["a", "b"]
    assert network_trend(per["a"], "plateau")["slope"] == pytest.approx(-0.3)
    assert network_trend(per["b"], "plateau")["slope"] == pytest.approx(0.0)


def test_spectrum_distance():
    a = np.array([3.0, 2.0, 1.0])
    assert spectrum_distance(a, a[::-1]) == 0.0  # sorted first
    assert spectrum_distance(a, 2 * a) == pytest.approx(np.linalg.norm(a) / (1.5 * np.linalg.norm(a)))
    assert spectrum_distance(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="lengths"):
        spectrum_distance(a, a[:2])


def test_image_vs_architecture_on_synthetic_spectra():
    rng = np.random.default_rng(0)
    base = np.sort(rng.uniform(0, 2, 200))[::-1]
    trained = [base * (1 + 0.01 * i) for i in range(4)]  # images: 1% apart
    alpha = [s * 1.25 for s in trained]  # the whole spectrum scaled: d_scale = 0
    interp = [[s + 0.3, s + 0.2] for s in trained]
    rows_ = image_vs_architecture(trained, alpha, interp, 1.25)
    assert len(rows_) == 4
    for r in rows_:
        assert r["d_image"] < r["d_arch"] and all(x < 1 for x in r["ratio"])
        assert r["d_scale"] == pytest.approx(0.0, abs=1e-12)
        assert r["d_arch"] == pytest.approx(min(r["d_alpha"], r["d_t_mean"]))
        assert len(r["d_t"]) == 2 and len(r["ratio"]) == 2
    with pytest.raises(ValueError, match="at least 2"):
        image_vs_architecture(trained[:1], alpha[:1], interp[:1], 1.25)
