"""Figures 1 and 2 of the paper: scree plots of spectra and band fractions per unit.

The data come from :func:`linstab.spectra.scree_data` and :func:`linstab.spectra.unit_bands`;
these functions only draw. Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no
backend selection) and written with :func:`linstab.plots.save_figure` as PNG and SVG.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..linalg.results import PLATEAU
from . import save_figure, skip_unchanged

__all__ = ["plot_scree", "plot_bands", "plot_band_fractions", "BAND_COLORS", "ROW_TITLES"]

# Figure 2 colors of the paper: > hi bold red, plateau blue, (0, lo) orange, 0 green
BAND_COLORS = {"above": "#c00000", "plateau": "#1f5fbf", "below": "#f28e2b", "zero": "#2ca02c"}
ROW_TITLES = {
    "unit": "unit {k} of each stage",
    "downsampling": "first (down-sampling) unit of each stage",
    "stage": "stages",
}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _line_colors(n: int) -> list:
    """``n`` distinct line colors: the default cycle up to 10, ``tab20`` up to 20, then evenly
    spaced ``turbo`` colors (with 11 or more images, ``C{i % 10}`` gave two images one color).
    """
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    from matplotlib import colormaps

    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _check_scree_data(datas: list) -> None:
    """A ValueError/TypeError naming what a :func:`plot_scree` argument lacks."""
    for i, d in enumerate(datas):
        if not isinstance(d, dict) or not isinstance(d.get("rows"), dict):
            raise TypeError(
                f"plot_scree: expected scree_data results (dicts with 'rows', 'images', 'model'), got "
                f"{type(d).__name__} at position {i}"
            )
        keys = [k for k in ROW_TITLES if d["rows"].get(k)]
        if not keys:
            raise ValueError(
                f"plot_scree: result {i} ({d.get('model', '?')}) has no panels: expected rows "
                f"{', '.join(ROW_TITLES)}, got {sorted(d['rows'])}"
            )


@skip_unchanged
def plot_scree(
    data: dict | list[dict], out: str | Path, formats: tuple[str, ...] = ("png", "svg")
) -> list[Path]:
    """Figure 1: scree plots (singular value against index) with images overlaid.

    One column block per model (side by side, e.g. ResNet-56 and ResNet-110), one column per
    stage, one row per component kind (unit ``S.5``, the first unit of each stage, the stage).
    A panel sits in the column of its ``"stage"``; a model with fewer panels (e.g. a shortcut
    reference with its down-sampling units only) leaves the other cells empty.

    Args:
        data: one dict from :func:`linstab.spectra.scree_data`, or a list of them (one per model);
            an optional ``"title"`` replaces the model's name above its block.
        out: output path; its suffix is replaced by each format.
        formats: file formats.

    Returns:
        the written paths.
    """
    from matplotlib.ticker import MaxNLocator

    datas = [data] if isinstance(data, dict) else list(data) if isinstance(data, list | tuple) else [data]
    if not datas:
        raise ValueError("plot_scree needs at least one scree_data result")
    _check_scree_data(datas)
    row_keys = [k for k in ("unit", "downsampling", "stage") if any(d["rows"].get(k) for d in datas)]

    def placed(d: dict) -> dict[str, dict[int, dict]]:  # row key -> stage -> panel
        return {k: {p.get("stage", j + 1): p for j, p in enumerate(d["rows"].get(k, []))} for k in row_keys}

    grids = [placed(d) for d in datas]
    # the stage columns each model fills (a reference with a few panels gets a narrower block)
    cols = [sorted({s for g in grid.values() for s in g}) or [1] for grid in grids]
    fig = _figure(2.6 * sum(map(len, cols)) + 0.5, 2.3 * len(row_keys) + 0.6)
    # one subfigure per model, titled with its name (a long name must not widen a column)
    subfigs = fig.subfigures(1, len(datas), squeeze=False, width_ratios=[len(c) for c in cols])[0]
    first_axes = None
    for m, d in enumerate(datas):
        axes = subfigs[m].subplots(len(row_keys), len(cols[m]), squeeze=False)
        first_axes = axes[0, 0] if first_axes is None else first_axes
        subfigs[m].suptitle(
            d.get("title") or d.get("model", ""), fontsize=10, weight="bold", x=0.02, ha="left"
        )
        for i, key in enumerate(row_keys):
            for j, stage in enumerate(cols[m]):
                ax = axes[i, j]
                p = grids[m][key].get(stage)
                below = [grids[m][k].get(stage) for k in row_keys[i + 1 :]]
                if p is None:
                    ax.set_visible(False)
                    continue
                spectra = p.get("spectra", [])
                colors = _line_colors(len(spectra))
                for c, (s, img) in enumerate(zip(spectra, d.get("images", []), strict=False)):
                    s = np.asarray(s, dtype=float)
                    ax.plot(
                        np.arange(1, s.size + 1),
                        s,
                        lw=1.0,
                        alpha=0.7,
                        color=colors[c],
                        label=str(img) if (i == 0 and j == 0) else None,
                    )
                alpha = p.get("alpha")
                if alpha is not None:
                    ax.axhline(abs(alpha), color="0.4", lw=0.6, ls="--")
                methods = p.get("method") or []
                partial = any(str(x).startswith("topk") for x in methods)
                title = p["label"] + (f" (top {len(spectra[0])})" if partial and spectra else "")
                ax.set_title(title, fontsize=8)
                ax.tick_params(labelsize=7)
                # at most 5 index ticks: 16384 values got 0, 2500, ..., 15000 run together
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
                ax.grid(alpha=0.3, lw=0.4)
                if j == 0:
                    ax.set_ylabel("singular value", fontsize=8)
                if not any(below):  # the lowest panel of its column
                    ax.set_xlabel("index", fontsize=8)
    handles, labels = first_axes.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(labels), 6),
            fontsize=7,
            title="images",
            title_fontsize=7,
        )
    return save_figure(fig, out, formats)


_BAND_FIELDS = ("stage", "unit", "frac_zero", "frac_below", "frac_plateau", "frac_above")


def _check_band_rows(rows: list[dict]) -> None:
    """A ValueError for rows :func:`plot_bands` cannot draw: a missing field, a stage or unit
    below 1, or two rows for the same model, stage and unit (their bars would cover each other).
    """
    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        missing = [k for k in _BAND_FIELDS if k not in r]
        if missing:
            raise ValueError(f"plot_bands: row {i} lacks {', '.join(missing)} (rows of unit_bands expected)")
        key = (r.get("model", ""), int(r["stage"]), int(r["unit"]))
        if key[1] < 1 or key[2] < 1:
            raise ValueError(f"plot_bands: row {i}: expected a 1-based stage and unit, got {key[1]}.{key[2]}")
        if key in seen:
            raise ValueError(
                f"plot_bands: rows {seen[key]} and {i} are both unit {key[1]}.{key[2]} of model {key[0]!r} "
                "(one row per model and unit: give models distinct names)"
            )
        seen[key] = i


@skip_unchanged
def plot_bands(rows: list[dict], out: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Figure 2: stacked fractions of singular values per band for each unit through the network.

    One panel per stage (a row of panels per model); x is the unit within the stage; bars stack
    the fractions at zero (green), in ``(0, lo)`` (orange), in ``[lo, hi]`` (blue) and above
    ``hi`` (red). The structurally exact ``|alpha|`` values are hatched inside the plateau bar.

    Args:
        rows: rows from :func:`linstab.spectra.unit_bands` (several models allowed).
        out: output path.
        formats: file formats.

    Returns:
        the written paths.
    """
    if not rows:
        raise ValueError("plot_bands needs at least one row")
    _check_band_rows(rows)
    models = list(dict.fromkeys(r.get("model", "") for r in rows))
    nst = max(int(r["stage"]) for r in rows)
    lo, hi = rows[0].get("thresholds") or PLATEAU
    fig = _figure(3.6 * nst, 2.6 * len(models) + 0.6)
    axes = fig.subplots(len(models), nst, squeeze=False, sharey=True)
    labels = {
        "zero": "0",
        "below": f"(0, {lo:g})",
        "plateau": f"[{lo:g}, {hi:g}]",
        "above": f"> {hi:g}",
    }
    for mi, model in enumerate(models):
        for s in range(1, nst + 1):
            ax = axes[mi, s - 1]
            rs = sorted(
                (r for r in rows if r.get("model", "") == model and int(r["stage"]) == s),
                key=lambda r: int(r["unit"]),
            )
            if not rs:
                ax.set_visible(False)
                continue
            x = np.array([int(r["unit"]) for r in rs])
            bottom = np.zeros(x.size)
            for key in ("zero", "below", "plateau", "above"):
                h = np.array([float(r[f"frac_{key}"]) for r in rs])
                ax.bar(
                    x,
                    h,
                    bottom=bottom,
                    width=0.85,
                    color=BAND_COLORS[key],
                    label=labels[key] if (mi == 0 and s == 1) else None,
                    edgecolor="black" if key == "above" else "none",
                    linewidth=0.4,
                )
                if key == "plateau":
                    ex = np.array([float(r.get("frac_exact_ones") or 0.0) for r in rs])
                    if ex.any():
                        ax.bar(
                            x,
                            ex,
                            bottom=bottom,
                            width=0.85,
                            color=BAND_COLORS["plateau"],
                            hatch="///",
                            lw=0,
                            edgecolor="white",
                            label="exactly |alpha|" if (mi == 0 and s == 1) else None,
                        )
                bottom += h
            ax.set_title(f"{model}: stage {s}" if model else f"stage {s}", fontsize=9)
            ax.set_xlabel("unit", fontsize=8)
            ax.set_xticks(x if x.size <= 20 else x[:: max(1, x.size // 10)])
            ax.tick_params(labelsize=7)
            ax.set_ylim(0, 1)
            if s == 1:
                ax.set_ylabel("fraction of singular values", fontsize=8)
    handles, labs = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles[::-1], labs[::-1], loc="outside lower center", ncols=len(labs), fontsize=7)
    return save_figure(fig, out, formats)


def _wrap(text: str, width: int = 28) -> str:
    """``text`` broken into lines of at most ``width`` characters (axis labels of long names)."""
    return "\n".join(textwrap.wrap(text, width)) or text


@skip_unchanged
def plot_band_fractions(
    summary: list[dict],
    single: list[dict],
    out: str | Path,
    *,
    title: str = "",
    single_label: str = "one image",
    formats: tuple[str, ...] = ("png", "svg"),
) -> list[Path]:
    """Figure 2 over many images: per unit, the median fraction of singular values in each band
    with its confidence band over the images, and one image's fractions as a line (the paper
    shows one image).

    Args:
        summary: one row per model, stage, unit and band: ``model``, ``stage``, ``unit``,
            ``band`` (``above``, ``plateau``, ``below``, ``zero``), ``median``, ``low``,
            ``high`` (the interval; NaN with one image), ``n_images``.
        single: rows of :func:`linstab.spectra.unit_bands` for one image per model; estimated
            rows (with ``{band}_lower``/``{band}_upper``) are drawn as crosses with their
            confidence intervals.
        out: output path.
        title: figure title (say which images).
        single_label: the legend entry of the single-image line.
        formats: file formats.

    Returns:
        the written paths.
    """
    if not summary:
        raise ValueError("plot_band_fractions needs at least one row")
    models = list(dict.fromkeys(r["model"] for r in summary))
    # one column per stage with rows (a quick report has no stage-1 units: no empty column,
    # and the legend, y label and y ticks go with the first column drawn)
    stages = sorted({int(r["stage"]) for r in summary})
    lo, hi = 0.99, 1.01
    names = {"above": f"> {hi:g}", "plateau": f"[{lo:g}, {hi:g}]", "below": f"(0, {lo:g})", "zero": "0"}
    fig = _figure(3.6 * len(stages), 2.7 * len(models) + 0.9)
    axes = fig.subplots(len(models), len(stages), squeeze=False, sharey=True)
    labelled, legend_ax = False, None
    for mi, model in enumerate(models):
        for col, s in enumerate(stages):
            ax = axes[mi, col]
            rs = [r for r in summary if r["model"] == model and int(r["stage"]) == s]
            if not rs:
                ax.set_visible(False)
                continue
            legend_ax = ax if legend_ax is None else legend_ax
            for band in ("above", "plateau", "below", "zero"):
                br = sorted((r for r in rs if r["band"] == band), key=lambda r: int(r["unit"]))
                if not br:  # a band without rows (e.g. a summary of some bands only): nothing to draw
                    continue
                x = np.array([int(r["unit"]) for r in br])
                med = np.array([float(r["median"]) for r in br])
                low = np.array([float(r["low"]) for r in br])
                high = np.array([float(r["high"]) for r in br])
                n = max(int(r["n_images"]) for r in br)
                color = BAND_COLORS[band]
                first = ax is legend_ax
                ax.plot(
                    x,
                    med,
                    color=color,
                    lw=2.2 if band == "above" else 1.4,
                    marker="o",
                    ms=2.5,
                    label=f"{names[band]}: median over {n} images" if first else None,
                )
                if np.isfinite(low).any():
                    ax.fill_between(
                        x,
                        low,
                        high,
                        color=color,
                        alpha=0.2,
                        lw=0,
                        label="95% CI" if first and band == "above" else None,
                    )
                one = sorted(
                    (r for r in single if r.get("model") == model and int(r["stage"]) == s),
                    key=lambda r: int(r["unit"]),
                )
                if one:
                    ax.plot(
                        [int(r["unit"]) for r in one],
                        [float(r[f"frac_{band}"]) for r in one],
                        color=color,
                        lw=0.9,
                        ls="--",
                        label=f"{single_label}" if first and band == "above" else None,
                    )
                    est = [r for r in one if r.get(f"{band}_lower") is not None]
                    if est:  # estimated counts: their 95% confidence intervals
                        f = np.array([float(r[f"frac_{band}"]) for r in est])
                        lo_ = np.array([float(r[f"{band}_lower"]) / float(r["n"]) for r in est])
                        hi_ = np.array([float(r[f"{band}_upper"]) / float(r["n"]) for r in est])
                        ax.errorbar(
                            [int(r["unit"]) for r in est],
                            f,
                            yerr=[np.clip(f - lo_, 0, None), np.clip(hi_ - f, 0, None)],
                            fmt="x",
                            ms=4,
                            color=color,
                            capsize=2,
                            lw=0.8,
                            label=None if labelled else "estimate (SLQ), 95% CI",
                        )
                        labelled = True
            ax.set_title(f"stage {s}", fontsize=9)
            ax.set_xlabel("unit", fontsize=8)
            units = sorted({int(r["unit"]) for r in rs})
            ax.set_xticks(units if len(units) <= 20 else units[:: max(1, len(units) // 10)])
            ax.tick_params(labelsize=7)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3, lw=0.4)
            if col == 0:  # the model names the row (long names do not fit the panel titles)
                ax.set_ylabel(f"{_wrap(model)}\nfraction of singular values", fontsize=8)
    legend: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=3, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, out, formats)
