"""Plotting functions given odd inputs: clear errors for what they cannot draw, readable figures
for what they can (empty spectra, zeros on log axes, many images), and output names kept apart."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import linstab.plots
from linstab.plots import ablations as A
from linstab.plots import perturbations as PP
from linstab.plots import save_figure
from linstab.plots import spectra as PS


def _capture(monkeypatch, module) -> list:
    figs = []
    monkeypatch.setattr(
        module, "save_figure", lambda fig, out, formats=("png", "svg"): figs.append(fig) or []
    )
    return figs


def test_save_figure_keeps_dotted_names_apart(tmp_path):
    # fig.v2 and fig.v3 both became fig.png (the second overwrote the first)
    a = save_figure(Figure(), tmp_path / "fig.v2")
    b = save_figure(Figure(), tmp_path / "fig.v3")
    assert [p.name for p in a] == ["fig.v2.png", "fig.v2.svg"]
    assert [p.name for p in b] == ["fig.v3.png", "fig.v3.svg"]
    assert [p.name for p in linstab.plots.figure_paths(tmp_path / "f.PNG")] == [
        "f.png",
        "f.svg",
    ]  # a figure suffix is replaced
    assert [p.name for p in save_figure(Figure(), tmp_path / "g", formats=(".PNG",))] == [
        "g.png"
    ]  # not g..PNG


def test_save_figure_refuses_formats_before_writing(tmp_path):
    for formats, err in (((), ValueError), (("png", "xyz"), ValueError), ("png", TypeError)):
        with pytest.raises(err, match="formats: expected"):
            save_figure(Figure(), tmp_path / "f", formats=formats)
    assert not list(tmp_path.iterdir())  # not even f.png before the unknown format


def _band_row(model="m", stage=1, unit=1, **kw) -> dict:
    fr = {"frac_above": 0.2, "frac_plateau": 0.1, "frac_below": 0.3, "frac_zero": 0.4}
    return {"model": model, "stage": stage, "unit": unit, **fr, **kw}


@pytest.mark.parametrize(
    "rows, why",
    [
        (
            [_band_row(), _band_row()],
            "rows 0 and 1 are both unit 1.1 of model 'm'",
        ),  # bars drawn over each other
        ([{"model": "m", "stage": 1, "unit": 1}], "row 0 lacks frac_zero"),  # was a KeyError
        ([_band_row(stage=0)], "expected a 1-based stage and unit, got 0.1"),  # was matplotlib's error
    ],
)
def test_plot_bands_refuses_rows_it_cannot_draw(rows, why, tmp_path):
    with pytest.raises(ValueError, match=why):
        PS.plot_bands(rows, tmp_path / "b")


def test_plot_bands_without_thresholds_uses_the_default_plateau(monkeypatch, tmp_path):
    figs = _capture(monkeypatch, PS)
    PS.plot_bands([_band_row(thresholds=None)], tmp_path / "b")  # was: cannot unpack None
    labels = [t.get_text() for t in figs[0].legends[0].get_texts()]
    assert "[0.99, 1.01]" in labels


def test_plot_scree_refuses_data_without_panels(tmp_path):
    with pytest.raises(ValueError, match=r"result 0 \(m\) has no panels"):
        PS.plot_scree({"model": "m", "images": ["a"], "rows": {}}, tmp_path / "s")
    with pytest.raises(TypeError, match="expected scree_data results"):
        PS.plot_scree("m", tmp_path / "s")


def test_plot_scree_gives_many_images_distinct_colors(monkeypatch, tmp_path):
    # with 11 or more images, image 10 had image 0's color
    figs = _capture(monkeypatch, PS)
    for n in (12, 30):
        spectra = [np.linspace(3, 0, 20) + 0.01 * i for i in range(n)]
        rows = {"unit": [{"stage": 1, "label": "u", "spectra": spectra}]}
        PS.plot_scree({"model": "m", "images": [f"i{i}" for i in range(n)], "rows": rows}, tmp_path / f"s{n}")
        colors = {to_rgba(line.get_color()) for line in figs[-1].axes[0].get_lines()[:n]}
        assert len(colors) == n


def test_plot_band_fractions_with_a_band_missing(monkeypatch, tmp_path):
    figs = _capture(monkeypatch, PS)
    rows = [
        {"model": "m", "stage": 1, "unit": 1, "band": b, "median": 0.5, "low": math.nan, "high": math.nan,
         "n_images": 1}
        for b in ("above", "plateau")
    ]  # fmt: skip
    PS.plot_band_fractions(rows, [], tmp_path / "f")  # was: max() arg is an empty sequence
    assert len(figs[0].axes[0].get_lines()) == 2


def _prop_rows(values, name="fgsm") -> list[dict]:
    return [
        {"perturbation": name, "image": "a", "position": i, "address": f"1.{i}", "stage": 1,
         "normalized": v, "pert_l2": 0.1}
        for i, v in enumerate(values)
    ]  # fmt: skip


def test_propagation_figure_says_what_a_log_axis_leaves_out():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned "Data has no positive values"
        fig = PP.propagation_figure(_prop_rows([0.0, 1.0, 2.0]), log=True)
        (ax,) = fig.axes
        assert ax.get_yscale() == "log" and "1 values <= 0 not shown (log axis)" in ax.get_title()
        fig = PP.propagation_figure(_prop_rows([0.0]), log=True)  # nothing positive: a linear axis
        assert fig.axes[0].get_yscale() == "linear"
    assert "not shown" not in PP.propagation_figure(_prop_rows([0.0, 1.0])).axes[0].get_title()


def test_propagation_figure_refuses_incomplete_and_duplicated_rows():
    with pytest.raises(ValueError, match="row 0 lacks position, address"):
        PP.propagation_figure([{"perturbation": "fgsm", "image": "a"}])  # was a KeyError
    rows = _prop_rows([1.0, 2.0])
    with pytest.raises(ValueError, match="rows 0 and 2 are both fgsm of image a at layer 1.0"):
        PP.propagation_figure(rows + rows)


class _Point:
    def __init__(self, value, values):
        self.value, self.singular_values = value, np.asarray(values, dtype=float)


def test_plot_ablations_with_empty_and_nan_spectra(monkeypatch, tmp_path):
    figs = _capture(monkeypatch, A)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # empty legends and log axes without data warned
        A.plot_ablations([], [], tmp_path / "a0")
        A.plot_ablations([_Point(1.0, [])], [_Point(0.5, [])], tmp_path / "a1")  # was a NumPy error
        A.plot_ablations([_Point(1.0, [2, 1])], [_Point(0.5, [np.nan, 2.0, 1.0])], tmp_path / "a2")
    ax2 = figs[-1].axes[1]
    assert ax2.get_yscale() == "log" and np.isclose(ax2.get_xlim()[1], 2.04, rtol=0.1)
