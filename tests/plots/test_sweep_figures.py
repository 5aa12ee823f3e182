"""Sweep figures of a network without jump ratios (ResNet-20: at most 4 units per stage)."""

from __future__ import annotations

import math
import warnings

from linstab.plots import sweep as plots


def test_panels_without_jump_ratios_say_why(monkeypatch, tmp_path):
    figs = {}

    def save(fig, out, formats):
        figs[out.name] = fig
        return []

    monkeypatch.setattr(plots, "save_figure", save)
    per_image = {
        "margin": [1.0, 2.0, 3.0],
        "fgsm": {
            "jump_ratio": [math.nan] * 3,
            "attack_l2": [0.1, 0.2, 0.3],
            "attack_eps": [1e-3, 2e-3, 3e-3],
        },
    }
    corr = [{"perturbation": "fgsm", "y": "attack_l2", "spearman": 1.0}]
    res = {"models": {"m": {"stats": [], "units": [], "per_image": per_image, "correlations": corr}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: "No artists with labels found to put in legend"
        plots.plot_sweep(res, tmp_path)
    (ax,) = figs["jump_ratio"].axes
    assert ax.get_legend() is None and "no jump ratios" in ax.texts[0].get_text()
    top, bottom = figs["margin_correlation"].axes
    assert "no jump ratios" in top.texts[0].get_text()
    assert bottom.get_legend() is not None and not bottom.texts


def test_attack_radii_spanning_decades_get_a_log_axis(monkeypatch, tmp_path):
    figs = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, formats: figs.setdefault(out.name, fig) and [])
    per_image = {
        "margin": [1.0, 2.0, 3.0],
        "fgsm": {"jump_ratio": [1.0] * 3, "attack_l2": [0.5, 0.7, 0.9], "attack_eps": [0.01, 0.02, 0.03]},
        "cw": {"jump_ratio": [1.0] * 3, "attack_l2": [0.003, 0.01, 0.02], "attack_eps": [0.011, 0.02, 0.025]},
    }
    res = {"models": {"m": {"stats": [], "units": [], "per_image": per_image, "correlations": []}}}
    plots.plot_sweep(res, tmp_path)
    l2, eps = figs["attack_radius"].axes
    assert l2.get_xscale() == "log" and eps.get_xscale() == "linear"  # 0.003-0.9 vs 0.01-0.03
    assert {t.get_text() for t in l2.get_legend().get_texts()} == {"fgsm (n=3)", "cw (n=3)"}
