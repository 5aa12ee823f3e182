"""Figures 1 and 2: what a reader sees (legend, axis labels, ticks)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from linstab.plots import spectra as plots


def _capture(monkeypatch) -> list:
    figs = []

    def save(fig, out, formats):
        figs.append(fig)
        return []

    monkeypatch.setattr(plots, "save_figure", save)
    return figs


def _summary(stages) -> list[dict]:
    rows = []
    for s in stages:
        for u in (1, 2, 3):
            for b, v in zip(("above", "plateau", "below", "zero"), (0.2, 0.1, 0.3, 0.4), strict=True):
                rows.append(
                    {
                        "model": "m",
                        "stage": s,
                        "unit": u,
                        "band": b,
                        "median": v,
                        "low": v - 0.05,
                        "high": v + 0.05,
                        "n_images": 2,
                    }  # fmt: skip
                )
    return rows


def test_band_fractions_without_stage_1_keep_legend_and_y_axis(monkeypatch, tmp_path):
    # a quick report has band counts of stages 2 and 3 only
    figs = _capture(monkeypatch)
    plots.plot_band_fractions(_summary([2, 3]), [], tmp_path / "f2", title="t")
    (fig,) = figs
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["stage 2", "stage 3"]
    assert len(fig.axes) == 2  # no empty column for stage 1
    assert "fraction of singular values" in axes[0].get_ylabel()
    assert any(t.get_text() for t in axes[0].get_yticklabels())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("median over 2 images" in lab for lab in labels) and "95% CI" in labels


def _overlap(boxes) -> bool:
    boxes = sorted(boxes, key=lambda b: b.x0)
    return any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:], strict=False))


def test_scree_index_labels_do_not_run_together(monkeypatch, tmp_path):
    # a stage-1 unit of a CIFAR ResNet has 16384 values: the index labels 10000 and 12500 touched
    figs = _capture(monkeypatch)
    s = np.sort(np.random.default_rng(0).random(16384))[::-1]
    rows = {
        k: [{"stage": st, "label": f"{k} {st}", "spectra": [s[: 16384 >> (st - 1)]]} for st in (1, 2, 3)]
        for k in ("unit", "downsampling")
    }
    plots.plot_scree({"model": "m", "images": ["a"], "rows": rows}, tmp_path / "f1")
    (fig,) = figs
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        assert 2 <= len(labels) <= 6, [t.get_text() for t in labels]
        assert not _overlap([t.get_window_extent(renderer) for t in labels]), [t.get_text() for t in labels]
