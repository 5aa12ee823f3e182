"""Figures 3 and 4 of the paper: propagated perturbations, growth predictions, projections.

Both functions take the rows of :func:`linstab.perturbations.analyze` (or read back from its
CSV) and return a :class:`matplotlib.figure.Figure` (no pyplot, no backend selection); save it
with :func:`linstab.plots.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["propagation_figure", "projections_figure"]

_COLORS = {
    "random": "0.45",
    "fgsm": "tab:blue",
    "pgd": "tab:orange",
    "deepfool": "tab:green",
    "cw": "tab:purple",
}


def _by(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]


def _in_norm(rows: list[dict], image, name: str, addr: str, alpha: np.ndarray) -> float:
    """``||dx||`` entering a unit (from the rows; ``||alpha||`` if the row is missing)."""
    hit = _by(rows, image=image, perturbation=name, address=addr)
    v = float(hit[0]["in_norm"]) if hit else float(np.linalg.norm(alpha))
    return v if v > 0 else 1.0


def _stage_bounds(layer_rows: list[dict]) -> list[float]:
    """X positions between stages (half-way between the last unit of one and the first of the next)."""
    out = []
    prev = None
    for r in layer_rows:
        st = int(r["stage"])
        if prev is not None and st != prev:
            out.append(int(r["position"]) - 0.5)
        prev = st
    return out


def _ticks(layer_rows: list[dict]) -> tuple[list[int], list[str]]:
    pos, lab = [], []
    n = len(layer_rows)
    for j, r in enumerate(layer_rows):
        nxt = layer_rows[j + 1] if j + 1 < n else None
        first = j == 0 or int(layer_rows[j - 1]["stage"]) != int(r["stage"])
        last = nxt is None or int(nxt["stage"]) != int(r["stage"])
        if first or last:
            pos.append(int(r["position"]))
            lab.append(str(r["address"]))
    return pos, lab


_PROPAGATION_FIELDS = ("perturbation", "image", "position", "address", "stage", "normalized", "pert_l2")


def propagation_figure(
    rows: list[dict],
    perturbations: Sequence[str] | None = None,
    *,
    log: bool = False,
    title: str | None = None,
) -> Figure:
    """Figure 3: normalized propagated perturbation after the stem and every unit, per image.

    One panel per perturbation (random first, as the paper's top row), one line per image;
    dotted vertical lines separate the stages.

    Args:
        rows: analysis rows (fields ``perturbation``, ``image``, ``position``, ``address``,
            ``stage``, ``normalized``, ``pert_l2``).
        perturbations: panel order (default: as they appear in ``rows``).
        log: logarithmic y axis.
        title: figure title.

    Raises:
        ValueError: when none of the requested perturbations has rows, or rows lack a field.
    """
    for i, r in enumerate(rows):
        missing = [k for k in _PROPAGATION_FIELDS if k not in r]
        if missing:
            raise ValueError(
                f"propagation_figure: row {i} lacks {', '.join(missing)} (rows of linstab propagate expected)"
            )
    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        key = (str(r["perturbation"]), str(r["image"]), int(r["position"]))
        if key in seen:
            raise ValueError(
                f"propagation_figure: rows {seen[key]} and {i} are both {key[0]} of image {key[1]} at layer "
                f"{r['address']} (rows of two runs? expected one row per perturbation, image and layer)"
            )
        seen[key] = i
    present = []
    for r in rows:
        if r["perturbation"] not in present:
            present.append(r["perturbation"])
    names = [n for n in (perturbations or present) if n in present]
    if not names:
        raise ValueError(f"no rows for perturbations {list(perturbations or [])}; rows hold {present}")
    fig = Figure(figsize=(9, 2.6 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        rr = _by(rows, perturbation=name)
        images = []
        for r in rr:
            if r["image"] not in images:
                images.append(r["image"])
        l2s, hidden = [], 0
        for im in images:
            ir = sorted(_by(rr, image=im), key=lambda r: int(r["position"]))
            xs = [int(r["position"]) for r in ir]
            ys = [float(r["normalized"]) for r in ir]
            if log:  # a log axis cannot show 0: a gap, counted in the title, not a silent drop
                hidden += sum(1 for y in ys if y <= 0)
                ys = [y if y > 0 else math.nan for y in ys]
            ax.plot(xs, ys, "-", lw=1.0, marker=".", ms=3, color=_COLORS.get(name), alpha=0.75)
            l2s.append(float(ir[0]["pert_l2"]))
        layer_rows = sorted(_by(rr, image=images[0]), key=lambda r: int(r["position"]))
        for b in _stage_bounds(layer_rows):
            ax.axvline(b, color="k", ls=":", lw=0.8)
        label = "random (uniform, same L2 as adversarial)" if name == "random" else name
        gap = f"; {hidden} values <= 0 not shown (log axis)" if hidden else ""
        ax.set_title(
            f"{label}: {len(images)} images, mean input ||delta||_2 = {np.mean(l2s):.3g}{gap}", fontsize=9
        )
        ax.set_ylabel("||dx_k|| / sqrt(n_k)")
        if log and any(math.isfinite(y) and y > 0 for line in ax.get_lines() for y in line.get_ydata()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    pos, lab = _ticks(layer_rows)
    axes[-1].set_xticks(pos)
    axes[-1].set_xticklabels(lab, rotation=90, fontsize=7)
    axes[-1].set_xlabel("layer (stem, then residual units STAGE.UNIT)")
    if title:
        fig.suptitle(f"Propagated perturbations, {title}", fontsize=10)
    return fig


def projections_figure(
    rows: list[dict],
    alphas: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
    *,
    stage: int,
    units: Sequence[str],
    attack: str,
    title: str | None = None,
    image: str | None = None,
) -> Figure:
    """Figure 4: one stage in detail.

    * top: normalized propagated perturbation over the stage's units (adversarial solid,
      random dashed), per image;
    * middle: growth ratio per unit, actual ``||dx_k|| / ||dx_{k-1}||`` vs the linear
      prediction ``||J_k dx_{k-1}|| / ||dx_{k-1}||`` (= eq. (1) with all singular vectors) and,
      where singular vectors were computed, eq. (1) over them with its bounds;
    * bottom: ``|alpha_i| / ||dx||`` vs ``i`` (log scale, so the leading vectors are visible)
      for the chosen units (adversarial in colour, random in grey on top), singular values
      ``sigma_i`` in red on the right axis.

    Args:
        rows: analysis rows with the attack and ``random``.
        alphas: ``(image, perturbation, address) -> (alpha, sigma)``.
        stage: the stage shown.
        units: addresses for the bottom row.
        attack: the adversarial perturbation's name.
        title: figure title.
        image: image id for the bottom row (default: the first with alphas).
    """
    ncol = max(len(units), 1)
    fig = Figure(figsize=(3.4 * ncol + 1.5, 9.5), layout="constrained")
    gs = fig.add_gridspec(3, ncol)
    ax_top = fig.add_subplot(gs[0, :])
    ax_mid = fig.add_subplot(gs[1, :])
    srows = [r for r in rows if int(r["stage"]) == stage]
    if not srows:
        raise ValueError(f"no rows for stage {stage}")
    images = []
    for r in srows:
        if r["image"] not in images:
            images.append(r["image"])
    for name, ls in ((attack, "-"), ("random", "--")):
        color = _COLORS.get(name, "tab:blue")
        for j, im in enumerate(images):
            ir = sorted(_by(srows, perturbation=name, image=im), key=lambda r: int(r["index"]))
            if not ir:
                continue
            xs = [int(r["index"]) for r in ir]
            lab = name if j == 0 else None
            ax_top.plot(xs, [float(r["normalized"]) for r in ir], ls, marker=".", color=color, label=lab)
            off = -0.12 if name == "random" else 0.0
            ax_mid.plot(
                xs,
                [float(r["growth"]) for r in ir],
                ls,
                marker="o",
                ms=4,
                color=color,
                label=f"{name}: actual" if j == 0 else None,
            )
            ax_mid.plot(
                [x + off for x in xs],
                [float(r["lin_ratio"]) for r in ir],
                "x",
                ms=7,
                color=color,
                label=f"{name}: linear ||J dx||/||dx|| (= eq. (1), all vectors)" if j == 0 else None,
            )
            eq = [
                (x + off, float(r["eq1_ratio"]), float(r["eq1_upper_ratio"]))
                for x, r in zip(xs, ir, strict=True)
                if math.isfinite(float(r["eq1_ratio"])) and str(r["spectrum"]).startswith("topk")
            ]
            if eq:
                ex, lo, hi = zip(*eq, strict=True)
                ax_mid.vlines(
                    ex,
                    lo,
                    hi,
                    color=color,
                    lw=3,
                    alpha=0.4,
                    label=f"{name}: eq. (1) top-k bounds" if j == 0 else None,
                )
    ax_top.set_ylabel("||dx_k|| / sqrt(n_k)")
    ax_top.set_title(f"stage {stage}: propagated perturbation ({attack} solid, random dashed)", fontsize=9)
    ax_top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax_top.grid(alpha=0.3)
    ax_top.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_mid.axhline(1.0, color="k", lw=0.6)
    ax_mid.set_ylabel("||dx_k|| / ||dx_{k-1}||")
    ax_mid.set_xlabel(f"unit of stage {stage}")
    ax_mid.set_title(
        "growth per unit: actual (o) vs predicted by linearization at the clean image (x)", fontsize=9
    )
    ax_mid.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax_mid.grid(alpha=0.3)
    ax_mid.xaxis.set_major_locator(MaxNLocator(integer=True))
    ids = [k[0] for k in alphas]
    im = image if image is not None else (ids[0] if ids else None)
    for c, addr in enumerate(units):
        ax = fig.add_subplot(gs[2, c])
        key = (im, attack, addr)
        if key not in alphas:
            ax.set_title(f"unit {addr}: no projections", fontsize=9)
            continue
        a, s = alphas[key]
        ra = alphas.get((im, "random", addr))
        i = np.arange(1, len(a) + 1)
        ax.plot(
            i,
            np.abs(a) / _in_norm(rows, im, attack, addr, a),
            color=_COLORS.get(attack, "tab:blue"),
            lw=0.6,
            label=attack,
        )
        if ra is not None:
            r = np.abs(ra[0]) / _in_norm(rows, im, "random", addr, ra[0])
            ax.plot(i, r, color="0.35", lw=0.5, alpha=0.6, label="random")
        ax.set_xscale("log")
        share = [f"{attack} {np.sum(a[:10] ** 2) / _in_norm(rows, im, attack, addr, a) ** 2:.1%}"]
        if ra is not None:
            share.append(
                f"random {np.sum(ra[0][:10] ** 2) / _in_norm(rows, im, 'random', addr, ra[0]) ** 2:.1%}"
            )
        ax.text(
            0.97, 0.72, "top-10 share of ||dx||^2:\n" + "\n".join(share), transform=ax.transAxes,
            ha="right", va="top", fontsize=7,
        )  # fmt: skip
        ax.set_xlabel("i (singular vector, descending sigma)")
        if c == 0:
            ax.set_ylabel("|alpha_i| / ||dx||")
            ax.legend(fontsize=7, loc="upper right")
        ax2 = ax.twinx()
        ax2.plot(i, s, color="red", lw=1.0)
        ax2.tick_params(axis="y", colors="red", labelsize=7)
        if c == ncol - 1:
            ax2.set_ylabel("sigma_i", color="red")
        # the image is named once in the figure title: per panel, neighbouring titles ran together
        ax.set_title(f"unit {addr} ({len(a)} vectors)", fontsize=9)
    if title:
        bottom = f"; bottom row: image {im}" if im is not None else ""
        fig.suptitle(f"{title}: {attack} vs random, stage {stage}{bottom}", fontsize=10)
    return fig
