"""Figures of a sweep: Figure 2 with confidence bands over images, distributions of the jump ratio
and the attack radius, correlations with the margin.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..linalg.results import BANDS
from . import save_figure
from .spectra import BAND_COLORS


# ============================================================================================
# figures
# ============================================================================================
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _bins(v: np.ndarray) -> int:
    return min(40, max(5, v.size // 3))


NO_JUMP_RATIO = "no jump ratios\n(none for networks with at most 4 units per stage)"


def _no_data(ax, text: str) -> None:
    """Say why a panel is empty (instead of blank axes and an empty legend box)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.3")


def _radius_histograms(ax, values: dict[str, np.ndarray]) -> None:
    """Overlaid histograms of attack radii; log-spaced bins on a log axis when the radii span
    more than a decade (minimal-norm attacks are often 10x smaller than FGSM's).
    """
    if not values:
        return
    allv = np.concatenate(list(values.values()))
    log = bool((allv > 0).all() and allv.max() > 10 * allv.min())
    for p, v in values.items():
        bins = np.geomspace(allv.min(), allv.max(), _bins(v) + 1) if log else _bins(v)
        ax.hist(v, bins=bins, alpha=0.5, label=f"{p} (n={v.size})")
    if log:
        ax.set_xscale("log")


def plot_sweep(
    res: dict, out_dir: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg")
) -> list[Path]:
    """Figures of :func:`sweep_statistics` (only those with data), written to ``out_dir``.

    * ``bands``: Figure 2 over the sweep -- per unit, the mean fraction of singular values in
      each band with its bootstrap CI as a shaded band (one panel per model);
    * ``jump_ratio``: distribution over images of the jump ratio, per perturbation;
    * ``attack_radius``: distributions of the attack radius (L2 per attack; L-inf eps of
      FGSM/PGD);
    * ``margin_correlation``: jump ratio and attack L2 radius against the margin, with
      Spearman's rho.
    """
    out_dir = Path(out_dir)
    models = res["models"]
    paths: list[Path] = []
    if not models:
        return paths
    # ---- Figure 2 --------------------------------------------------------------------------
    with_bands = {m: d for m, d in models.items() if any(s["analysis"] == "bands" for s in d["stats"])}
    if with_bands:
        width = max(6.0, 0.35 * max(len(d["units"]) for d in with_bands.values()) + 2)
        fig = _figure(width, 3.0 * len(with_bands))
        axes = fig.subplots(len(with_bands), 1, squeeze=False)[:, 0]
        for ax, (model, d) in zip(axes, with_bands.items(), strict=True):
            by = {(s["unit"], s["statistic"]): s for s in d["stats"] if s["analysis"] == "bands"}
            units = [u for u in d["units"] if (u, "frac_plateau") in by]
            xs = np.arange(len(units))
            for b in BANDS:
                ss = [by[(u, f"frac_{b}")] for u in units]
                mean = np.array([s["mean"] for s in ss])
                ax.plot(xs, mean, "o-", ms=3, color=BAND_COLORS[b], label=b)
                ax.fill_between(
                    xs,
                    [s["ci_low"] for s in ss],
                    [s["ci_high"] for s in ss],
                    color=BAND_COLORS[b],
                    alpha=0.25,
                    lw=0,
                )
            n = max((by[(u, "frac_plateau")]["n"] for u in units), default=0)
            ax.set_xticks(xs, units, rotation=90, fontsize=7)
            ax.set_xlabel("unit (stage.index)", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("fraction of singular values")
            lossy = " (lossy JPEG images)" if d.get("lossy") else ""
            ax.set_title(f"{model}: band fractions, mean and 95% CI over {n} images{lossy}", fontsize=9)
            ax.legend(fontsize=7, ncol=4, loc="upper right")
        paths += save_figure(fig, out_dir / "bands", formats)
    # ---- per-image distributions -------------------------------------------------------------
    prop = {m: d for m, d in models.items() if any(isinstance(v, dict) for v in d["per_image"].values())}
    if prop:
        perts_of = {m: [k for k, v in d["per_image"].items() if isinstance(v, dict)] for m, d in prop.items()}
        fig = _figure(4.2 * len(prop), 3.2)
        axes = fig.subplots(1, len(prop), squeeze=False)[0]
        for ax, (model, d) in zip(axes, prop.items(), strict=True):
            for p in perts_of[model]:
                v = np.asarray(d["per_image"][p]["jump_ratio"], dtype=float)
                v = v[np.isfinite(v)]
                if v.size:
                    ax.hist(v, bins=_bins(v), alpha=0.5, label=f"{p} (n={v.size})")
            ax.axvline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xlabel("jump ratio (growth over last 3 units / stage)")
            ax.set_ylabel("images")
            ax.set_title(model, fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            else:
                _no_data(ax, NO_JUMP_RATIO)
        paths += save_figure(fig, out_dir / "jump_ratio", formats)

        fig = _figure(4.2 * len(prop), 6.0)
        axes = fig.subplots(2, len(prop), squeeze=False)
        for j, (model, d) in enumerate(prop.items()):
            for i, stat in enumerate(("attack_l2", "attack_eps")):
                # the random perturbation copies the reference attack's radius: left out
                got = {
                    p: np.asarray(d["per_image"][p][stat], dtype=float)
                    for p in perts_of[model]
                    if p != "random"
                }
                got = {p: v[np.isfinite(v)] for p, v in got.items()}
                got = {p: v for p, v in got.items() if v.size}
                _radius_histograms(axes[i, j], got)
            axes[0, j].set_xlabel("attack radius ||delta||_2")
            axes[1, j].set_xlabel("attack radius eps (L-inf)")
            axes[0, j].set_title(model, fontsize=9)
            for ax in axes[:, j]:
                ax.set_ylabel("images")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7)
        paths += save_figure(fig, out_dir / "attack_radius", formats)

        fig = _figure(4.2 * len(prop), 6.0)
        axes = fig.subplots(2, len(prop), squeeze=False)
        for j, (model, d) in enumerate(prop.items()):
            margin = np.asarray(d["per_image"]["margin"], dtype=float)
            rho = {(c["perturbation"], c["y"]): c["spearman"] for c in d["correlations"]}
            for p in perts_of[model]:
                for i, stat in enumerate(("jump_ratio", "attack_l2")):
                    if stat == "attack_l2" and p == "random":
                        continue
                    v = np.asarray(d["per_image"][p][stat], dtype=float)
                    ok = np.isfinite(v) & np.isfinite(margin)
                    if ok.any():
                        r = rho.get((p, stat), math.nan)
                        axes[i, j].scatter(margin[ok], v[ok], s=6, alpha=0.6, label=f"{p} (rho={r:.2f})")
            axes[0, j].set_ylabel("jump ratio")
            axes[1, j].set_ylabel("attack radius ||delta||_2")
            axes[0, j].set_title(model, fontsize=9)
            for ax, empty in zip(axes[:, j], (NO_JUMP_RATIO, "no attack radii"), strict=True):
                ax.set_xlabel("margin (label logit - largest other)")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7)
                else:
                    _no_data(ax, empty)
        paths += save_figure(fig, out_dir / "margin_correlation", formats)
    return paths
