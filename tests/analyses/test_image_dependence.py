"""Model-to-model distances against architecture changes (linstab.analyses.image_dependence)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linstab.analyses.image_dependence import image_vs_architecture, model_vs_architecture, spectrum_distance


def _spectra(seed: int, n_img: int = 4, n: int = 50, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    base = np.sort(rng.uniform(0, 2, n))[::-1] + shift
    return [base + 0.01 * rng.standard_normal(n) for _ in range(n_img)]


def test_model_vs_architecture_per_image():
    a, b = _spectra(0), _spectra(1)
    alpha_a = [1.25 * s for s in a]
    alpha_b = [1.25 * s for s in b]
    rows_a = image_vs_architecture(a, alpha_a, [[s + 0.3] for s in a], 1.25)
    rows_b = image_vs_architecture(b, alpha_b, [[s + 0.3] for s in b], 1.25)
    rows = model_vs_architecture(a, b, rows_a, rows_b)
    assert len(rows) == 4
    for i, r in enumerate(rows):
        assert r["d_model"] == pytest.approx(spectrum_distance(a[i], b[i]))
        assert r["d_arch"] == pytest.approx(0.5 * (rows_a[i]["d_arch"] + rows_b[i]["d_arch"]))
        assert r["ratio"] == pytest.approx(r["d_model"] / r["d_arch"])
    # the same network twice: no model distance
    same = model_vs_architecture(a, a, rows_a, rows_a)
    assert all(r["d_model"] == 0 and r["ratio"] == 0 for r in same)


def test_model_vs_architecture_checks_lengths_and_zero_arch():
    a = _spectra(0, n_img=2)
    rows = [{"d_image": 0.1, "d_arch": 0.0}] * 2
    out = model_vs_architecture(a, _spectra(2, n_img=2), rows, rows)
    assert all(math.isinf(r["ratio"]) for r in out)
    with pytest.raises(ValueError, match="one entry per image"):
        model_vs_architecture(a, a[:1], rows, rows)


def test_spectrum_distance_refuses_what_is_not_two_spectra():
    """Two empty spectra were at distance 0.0 (identical), NaN values gave NaN silently."""
    assert spectrum_distance([3.0, 1.0], [1.0, 3.0]) == 0.0
    assert spectrum_distance([0.0, 0.0], [0.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="two empty spectra"):
        spectrum_distance([], [])
    with pytest.raises(ValueError, match="NaN or infinite"):
        spectrum_distance([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="different lengths: 2 and 1"):
        spectrum_distance([1.0, 2.0], [1.0])
