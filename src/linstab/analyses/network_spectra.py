"""Spectra of every unit and stage of a network (Figures 1 and 2): scree values, band counts,
their CSV, and the quick-mode rules (which routes fit a short run).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..io.profile import scope
from ..io.tables import write_csv
from ..linalg.band_estimates import estimate_bands
from ..linalg.results import BANDS
from ..spectra.bands import _check_bands_args, bands
from ..spectra.spectrum import spectrum


def progress_bar(iterable=None, **kw):
    """A tqdm progress bar (``tqdm.auto``) over ``iterable``; keyword arguments go to tqdm."""
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


def unit_bands(
    net,
    image: torch.Tensor,
    thresholds: tuple[float, float] = (0.99, 1.01),
    zero_tol: float = 1e-6,
    *,
    dtype: torch.dtype = torch.float64,
    units: list[str] | None = None,
    progress: bool = True,
    estimate: dict | None = None,
) -> list[dict]:
    """Band counts of every residual unit of a network at one image (paper Figure 2).

    Args:
        net: a :class:`~linstab.network.Network`.
        image: ``(3, H, W)`` in [0, 1].
        thresholds: ``(lo, hi)``.
        zero_tol: values at or below it count as zero.
        dtype: dtype of the linearization (the counts are computed in float64).
        units: addresses ``"S.K"`` to restrict to (default: all).
        progress: show a progress bar.
        estimate: estimate the counts matrix-free instead of counting them exactly (units too
            large for the exact routes): keyword arguments of
            :func:`~linstab.linalg.estimate_bands` (``{}`` for its defaults). The rows then
            also carry ``*_lower``/``*_upper`` (the confidence interval of each count) and
            ``route = "estimate-slq"``.

    Returns:
        one dict per unit: ``model, stage, unit, address, kind, shortcut, n``, the counts
        ``above, plateau, below, zero`` and fractions ``frac_*``, ``exact_ones`` (``None`` when
        not structured), ``frac_exact_ones``, ``route``, ``seconds``, ``thresholds``, ``zero_tol``.
    """
    _check_bands_args(thresholds, zero_tol)
    lin = net.linearize(image, dtype=dtype)
    todo = [u for u in net.units if units is None or u.address in set(units)]
    rows = []
    bar = progress_bar(todo, desc=f"bands {net.name}", unit="unit", disable=not progress)
    for u in bar:
        bar.set_postfix_str(u.address)
        op = lin.unit(u.stage, u.index)
        t = time.perf_counter()
        if estimate is not None:
            rows.append(_estimate_row(net, u, op, thresholds, zero_tol, estimate, t))
            continue
        bc = bands(op, thresholds, zero_tol)
        fr = bc.fractions
        rows.append(
            {
                "model": net.name,
                "stage": u.stage,
                "unit": u.index,
                "address": u.address,
                "kind": u.kind,
                "shortcut": u.shortcut,
                "n": bc.n,
                "above": bc.above,
                "frac_above": fr["above"],
                "plateau": bc.plateau,
                "frac_plateau": fr["plateau"],
                "below": bc.below,
                "frac_below": fr["below"],
                "zero": bc.zero,
                "frac_zero": fr["zero"],
                "exact_ones": bc.n_exact_ones,
                "frac_exact_ones": fr.get("exact_ones"),
                "alpha": bc.alpha,
                "route": bc.route,
                "seconds": time.perf_counter() - t,
                "thresholds": (float(thresholds[0]), float(thresholds[1])),
                "zero_tol": float(zero_tol),
            }
        )
    return rows


def _estimate_row(net, u, op, thresholds, zero_tol, options: dict, t0: float) -> dict:
    est = estimate_bands(op, thresholds, zero_tol, **options)
    row = {
        "model": net.name,
        "stage": u.stage,
        "unit": u.index,
        "address": u.address,
        "kind": u.kind,
        "shortcut": u.shortcut,
        "n": est.n,
    }
    for band in BANDS:
        iv = est.band(band)
        row[band] = iv.estimate
        row[f"frac_{band}"] = iv.estimate / max(est.n, 1)
        row[f"{band}_lower"] = iv.lower
        row[f"{band}_upper"] = iv.upper
    row.update(
        exact_ones=est.n_exact_plateau,
        frac_exact_ones=None if est.n_exact_plateau is None else est.n_exact_plateau / max(est.n, 1),
        alpha=est.plateau_value,
        route="estimate-slq",
        n_probes=est.n_probes,
        lanczos_steps=est.lanczos_steps,
        confidence=est.confidence,
        seconds=time.perf_counter() - t0,
        thresholds=(float(thresholds[0]), float(thresholds[1])),
        zero_tol=float(zero_tol),
    )
    return row


def _csv_columns(lo: float, hi: float) -> list[tuple[str, str]]:
    return [
        ("stage", "stage"),
        ("unit", "unit"),
        ("address", "address"),
        ("kind", "kind"),
        ("shortcut", "shortcut"),
        ("n", "n"),
        (f"n_gt_{hi:g}", "above"),
        (f"frac_gt_{hi:g}", "frac_above"),
        (f"n_in_{lo:g}_{hi:g}", "plateau"),
        (f"frac_in_{lo:g}_{hi:g}", "frac_plateau"),
        (f"n_in_0_{lo:g}", "below"),
        (f"frac_in_0_{lo:g}", "frac_below"),
        ("n_zero", "zero"),
        ("frac_zero", "frac_zero"),
        ("n_exact_ones", "exact_ones"),
        ("frac_exact_ones", "frac_exact_ones"),
        ("route", "route"),
        ("seconds", "seconds"),
    ]


def write_bands_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write :func:`unit_bands` rows as CSV (band names carry the thresholds)."""
    lo, hi = rows[0]["thresholds"] if rows else (0.99, 1.01)
    cols = _csv_columns(lo, hi)
    if rows and "above_lower" in rows[0]:  # estimates: confidence intervals of the counts
        cols += [(f"{b}_{side}", f"{b}_{side}") for b in BANDS for side in ("lower", "upper")]
        cols += [("n_probes", "n_probes"), ("lanczos_steps", "lanczos_steps"), ("confidence", "confidence")]
    table = [{name: r.get(key) for name, key in cols} for r in rows]
    return write_csv(table, path, [name for name, _ in cols], float_format=".6g")


def scree_data(
    net,
    images: torch.Tensor,
    *,
    unit_index: int = 5,
    stages: bool = True,
    dtype: torch.dtype = torch.float64,
    stage_method: str = "auto",
    stage_k: int = 256,
    max_dense: int = 8192,
    image_ids: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Spectra for the paper's Figure 1 for one network: unit ``S.unit_index`` of each stage,
    the first (down-sampling) unit of each stage, and each stage, at several images.

    Args:
        net: a :class:`~linstab.network.Network`.
        images: ``(N, 3, H, W)`` in [0, 1].
        unit_index: the unit of each stage for the first row (paper: 5); clipped to the stage.
        stages: include the stage spectra (the expensive part).
        dtype: linearization and dense dtype.
        stage_method: ``"exact"``, ``"topk"`` or ``"auto"`` (exact when the smaller side is at
            most ``max_dense``, else the ``stage_k`` largest values).
        stage_k: values per stage for ``"topk"``.
        max_dense: size limit of ``"auto"``.
        image_ids: labels of the images.
        progress: show a progress bar.

    Returns:
        ``{"model", "images", "rows": {"unit": [...], "downsampling": [...], "stage": [...]}}``;
        each panel is ``{"stage", "label", "n", "method", "spectra": [np.ndarray per image],
        "exact_ones": [...], "alpha"}``.
    """
    if stage_method not in ("auto", "exact", "topk"):
        raise ValueError(f"stage_method must be 'auto', 'exact' or 'topk', got {stage_method!r}")
    images = images if images.ndim == 4 else images.unsqueeze(0)
    ids = image_ids or [str(i) for i in range(images.shape[0])]
    nst = len(net.stages)
    rows: dict[str, list[dict]] = {"unit": [], "downsampling": []}
    if stages:
        rows["stage"] = []
    for s in range(1, nst + 1):
        k5 = min(unit_index, len(net.stages[s - 1]))
        rows["unit"].append({"stage": s, "label": f"unit {s}.{k5}", "address": f"{s}.{k5}", "spectra": []})
        info = net.unit(s, 1)
        rows["downsampling"].append(
            {"stage": s, "label": f"unit {s}.1 ({info.kind})", "address": f"{s}.1", "spectra": []}
        )
        if stages:
            rows["stage"].append({"stage": s, "label": f"stage {s}", "spectra": []})
    tasks = [(i, key, p) for i in range(images.shape[0]) for key in rows for p in rows[key]]
    bar = progress_bar(total=len(tasks), desc=f"spectra {net.name}", unit="spectrum", disable=not progress)
    for i in range(images.shape[0]):
        lin = net.linearize(images[i], dtype=dtype)
        for key, panels in rows.items():
            for p in panels:
                bar.set_postfix_str(f"image {ids[i]} {p['label']}")
                with scope(panel=p["label"], image=ids[i]):
                    res, op = _panel_spectrum(lin, key, p, stage_method, stage_k, max_dense, dtype)
                p.setdefault("n", min(op.shape))
                p.setdefault("method", []).append(f"{res.method}:{res.route}")
                p["spectra"].append(res.values.to(torch.float64).numpy())
                p.setdefault("exact_ones", []).append(res.n_exact_ones)
                p["alpha"] = res.alpha
                bar.update(1)
    bar.close()
    return {"model": net.name, "images": ids, "rows": rows}


def _panel_spectrum(lin, key: str, p: dict, stage_method: str, stage_k: int, max_dense: int, dtype):
    if key == "stage":
        op = lin.stage(p["stage"])
        meth = stage_method
        if meth == "auto":
            meth = "exact" if min(op.shape) <= max_dense else "topk"
        if meth == "topk":
            return spectrum(op, "topk", k=min(stage_k, min(op.shape))), op
        return spectrum(op, "exact", dtype=dtype, progress=False), op
    s_, k_ = (int(v) for v in p["address"].split("."))
    op = lin.unit(s_, k_)
    return spectrum(op, "exact", dtype=dtype), op


QUICK_EXACT_MAX = 4096  # quick mode: exact spectra up to this size, top-k values above it


QUICK_TOPK = 64


def scree_quick(net, images, progress: bool = True) -> dict:
    """Figure 1 data in quick mode: exact spectra for units with at most
    :data:`QUICK_EXACT_MAX` singular values, the :data:`QUICK_TOPK` largest for larger units
    and for every stage operator.
    """
    rows: dict[str, list[dict]] = {"unit": [], "downsampling": [], "stage": []}
    for s_ in range(1, len(net.stages) + 1):
        k5 = min(5, len(net.stages[s_ - 1]))
        rows["unit"].append({"stage": s_, "label": f"unit {s_}.{k5}", "address": f"{s_}.{k5}", "spectra": []})
        kind = net.unit(s_, 1).kind
        rows["downsampling"].append(
            {"stage": s_, "label": f"unit {s_}.1 ({kind})", "address": f"{s_}.1", "spectra": []}
        )
        rows["stage"].append({"stage": s_, "label": f"stage {s_}", "spectra": []})
    for i in range(images.shape[0]):
        lin = net.linearize(images[i], dtype=torch.float64)
        for key, panels in rows.items():
            for p in panels:
                if key == "stage":
                    op = lin.stage(p["stage"])
                else:
                    a, b = (int(v) for v in p["address"].split("."))
                    op = lin.unit(a, b)
                n = min(op.shape)
                exact = key != "stage" and n <= QUICK_EXACT_MAX
                with scope(panel=p["label"], image=str(i)):
                    res = spectrum(op, "exact") if exact else spectrum(op, "topk", k=min(QUICK_TOPK, n))
                p["n"] = n
                p.setdefault("method", []).append(res.method)
                p["spectra"].append(res.values.to(torch.float64).numpy())
                p.setdefault("exact_ones", []).append(res.n_exact_ones)
                p["alpha"] = getattr(res, "alpha", None)
    return {"model": net.name, "images": [str(i) for i in range(images.shape[0])], "rows": rows}
