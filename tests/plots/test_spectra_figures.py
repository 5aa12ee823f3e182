"""Figures 1 and 2: what a reader sees (legend, axis labels, ticks)."""

from __future__ import annotations

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
