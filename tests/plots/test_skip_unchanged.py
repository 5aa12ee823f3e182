"""Figures are not drawn again when their data and output are unchanged."""

from __future__ import annotations

import numpy as np

from linstab.analyses.dynamics import LyapunovResult
from linstab.plots.ablations import plot_lyapunov


def _result(scale: float = 1.0) -> LyapunovResult:
    g = np.random.default_rng(0).normal(size=(6, 3)) * scale
    return LyapunovResult(
        units=[f"1.{i + 1}" for i in range(6)],
        log_growth=g,
        cumulative=g.cumsum(axis=0),
        k=3,
        seed=0,
        stage_log_growth_top={1: float(g[:, 0].sum())},
    )


def test_unchanged_figures_are_not_redrawn(tmp_path):
    out = tmp_path / "ly"
    first = plot_lyapunov(_result(), out, title="a")
    stamps = {p: p.stat().st_mtime_ns for p in first}
    again = plot_lyapunov(_result(), out, title="a")
    assert again == first and {p: p.stat().st_mtime_ns for p in again} == stamps
    # other data, another title: drawn again
    for res, title in ((_result(2.0), "a"), (_result(), "b")):
        paths = plot_lyapunov(res, out, title=title)
        assert any(p.stat().st_mtime_ns != stamps[p] for p in paths)
        stamps = {p: p.stat().st_mtime_ns for p in paths}
    # a missing file: drawn again
    first[0].unlink()
    paths = plot_lyapunov(_result(), out, title="b")
    assert first[0].is_file() and paths == first
