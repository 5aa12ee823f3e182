"""Figure 5 (skip scaling and weight interpolation) and the dynamics figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import save_figure, skip_unchanged

__all__ = ["plot_ablations", "plot_eigenvalues", "plot_lyapunov"]


@skip_unchanged
def plot_ablations(alpha_points, t_points, out: str | Path, title: str = "") -> list[Path]:
    """Figure 5: scree plots per ``alpha`` (left), singular-value histograms per ``t`` (right).

    Args:
        alpha_points: :class:`~linstab.ablations.AblationPoint` list for skip scaling.
        t_points: AblationPoint list for weight interpolation.
        out: output path (PNG and SVG are written).
        title: figure title.
    """
    fig = Figure(figsize=(12, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    cmap = fig.colormaps["viridis"] if hasattr(fig, "colormaps") else None
    for i, p in enumerate(alpha_points):
        color = _color(i, len(alpha_points), cmap)
        s = np.asarray(p.singular_values)
        ax1.plot(np.arange(1, s.size + 1), s, color=color, lw=1.5, label=f"alpha = {p.value:g}")
        ax1.axhline(p.value, color=color, lw=0.6, ls=":")
    ax1.set_xlabel("index i")
    ax1.set_ylabel("singular value sigma_i")
    ax1.set_title("Skip-connection scaling: plateau moves to alpha")
    _legend(ax1, fontsize=8)
    ax1.grid(alpha=0.3)
    # the largest finite value (an empty or all-NaN spectrum has none: it adds nothing to the bins)
    finite = [s[np.isfinite(s)] for s in (np.asarray(p.singular_values, dtype=float) for p in t_points)]
    smax = max((float(s.max()) for s in finite if s.size), default=1.0) or 1.0
    bins = np.linspace(0, smax * 1.02, 80)
    for i, p in enumerate(t_points):
        s = np.asarray(p.singular_values)
        ax2.hist(
            s,
            bins=bins,
            histtype="step",
            lw=1.5,
            color=_color(i, len(t_points), cmap),
            label=f"t = {p.value:g}",
        )
    if any(s.size for s in finite):  # a log axis of empty histograms warns and shows nothing
        ax2.set_yscale("log")
    ax2.set_xlabel("singular value")
    ax2.set_ylabel("count")
    ax2.set_title("Weights t*theta + (1-t)*noise")
    _legend(ax2, fontsize=8)
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def _legend(ax, **kwargs) -> None:
    """A legend when ``ax`` has labelled artists (no empty box, no matplotlib warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _color(i: int, n: int, cmap):
    x = i / max(n - 1, 1)
    if cmap is not None:
        return cmap(0.1 + 0.8 * x)
    return (x, 0.3, 1 - x)


@skip_unchanged
def plot_eigenvalues(
    results: dict[str, object], sigma_max: dict[str, float], out: str | Path, title: str = ""
) -> list[Path]:
    """Eigenvalues of unit Jacobians in the complex plane, with the unit circle and sigma_max.

    Args:
        results: unit address -> :class:`~linstab.dynamics.EigenResult`.
        sigma_max: unit address -> largest singular value.
        out: output path.
        title: figure title.
    """
    n = max(len(results), 1)
    fig = Figure(figsize=(4.2 * n, 4.4))
    axes = np.atleast_1d(fig.subplots(1, n))
    theta = np.linspace(0, 2 * np.pi, 400)
    for ax, (addr, res) in zip(axes, results.items(), strict=False):
        v = np.asarray(res.values)
        ax.scatter(v.real, v.imag, s=3, alpha=0.5, color="tab:blue", label="eigenvalues")
        ax.plot(np.cos(theta), np.sin(theta), color="gray", lw=0.8, label="|z| = 1")
        sm = sigma_max.get(addr)
        if sm is not None:
            ax.plot(
                sm * np.cos(theta),
                sm * np.sin(theta),
                color="tab:red",
                lw=0.8,
                ls="--",
                label=f"sigma_max = {sm:.3f}",
            )
        ax.set_aspect("equal")
        ax.set_title(f"unit {addr}: rho = {res.spectral_radius:.3f}")
        ax.set_xlabel("Re")
        ax.set_ylabel("Im")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


@skip_unchanged
def plot_lyapunov(res, out: str | Path, title: str = "") -> list[Path]:
    """Per-unit and cumulative log-growth of the top Lyapunov directions."""
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(res.units))
    k = res.log_growth.shape[1]
    show = list(range(min(k, 5)))
    for j in show:
        ax1.plot(x, res.log_growth[:, j], lw=1.2, label=f"direction {j + 1}")
        ax2.plot(x, res.cumulative[:, j], lw=1.2, label=f"direction {j + 1}")
    for ax, lab in ((ax1, "log |R_kk| per unit"), (ax2, "cumulative log-growth")):
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(x[:: max(1, len(x) // 14)])
        ax.set_xticklabels([res.units[i] for i in x[:: max(1, len(x) // 14)]], rotation=60, fontsize=7)
        ax.set_xlabel("unit")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)
