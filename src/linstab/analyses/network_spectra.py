"""Spectra of every unit and stage of a network (Figures 1 and 2): scree values, band counts,
their CSV, and the quick-mode rules (which routes fit a short run).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io.profile import scope
from ..io.tables import write_csv
from ..io.validate import check_int
from ..linalg.band_estimates import estimate_bands
from ..linalg.results import BANDS, EXACT_ROUTES, PLATEAU, ZERO_TOL, SpectrumResult
from ..spectra.accuracy import squared_error, value_error
from ..spectra.bands import _check_bands_args, bands
from ..spectra.exact import EXACT_REVISION
from ..spectra.spectrum import spectrum
from .propagation import resolve_units


def progress_bar(iterable=None, **kw):
    """A tqdm progress bar (``tqdm.auto``) over ``iterable``; keyword arguments go to tqdm."""
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


def unit_bands(
    net,
    image: torch.Tensor,
    thresholds: tuple[float, float] = PLATEAU,
    zero_tol: float = ZERO_TOL,
    *,
    dtype: torch.dtype = torch.float64,
    units: list[str] | None = None,
    progress: bool = True,
    estimate: dict | None = None,
    exact_ones: bool = True,
) -> list[dict]:
    """Band counts of every residual unit of a network at one image (paper Figure 2).

    Args:
        net: a :class:`~linstab.network.Network`.
        image: ``(3, H, W)`` in [0, 1].
        thresholds: ``(lo, hi)``.
        zero_tol: values at or below it count as zero.
        dtype: dtype of the linearization (the counts are computed in float64).
        units: addresses ``"S.K"`` to restrict to, or a spec of
            :func:`~linstab.analyses.propagation.resolve_units` (``"3.7"``, ``"last"``, a stage,
            a comma list; default: all).
        progress: show a progress bar.
        estimate: estimate the counts matrix-free instead of counting them exactly (units too
            large for the exact routes): keyword arguments of
            :func:`~linstab.linalg.estimate_bands` (``{}`` for its defaults). The rows then
            also carry ``*_lower``/``*_upper`` (the confidence interval of each count) and
            ``route = "estimate-slq"``.
        exact_ones: see :func:`~linstab.spectra.bands.bands` (``False``: ``exact_ones`` is
            ``None`` where counting it would take a whole spectrum).

    Returns:
        one dict per unit: ``model, stage, unit, address, kind, shortcut, n``, the counts
        ``above, plateau, below, zero`` and fractions ``frac_*``, ``exact_ones`` (``None`` when
        not structured), ``frac_exact_ones``, ``route``, ``seconds``, ``thresholds``, ``zero_tol``.

    Raises:
        ValueError: for bad thresholds or a unit the network does not have.
    """
    _check_bands_args(thresholds, zero_tol)
    wanted = None if units is None else set(resolve_units(net, units))  # unknown units: before any work
    lin = net.linearize(image, dtype=dtype)
    todo = [u for u in net.units if wanted is None or u.address in wanted]
    rows = []
    bar = progress_bar(todo, desc=f"bands {net.name}", unit="unit", disable=not progress)
    for u in bar:
        bar.set_postfix_str(u.address)
        op = lin.unit(u.stage, u.index)
        t = time.perf_counter()
        if estimate is not None:
            rows.append(_estimate_row(net, u, op, thresholds, zero_tol, estimate, t))
            continue
        bc = bands(op, thresholds, zero_tol, exact_ones=exact_ones)
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
    # as the exact routes: no count where the unit has no such structure (e.g. down-sampling)
    ones = est.n_exact_plateau if est.plateau_value is not None else None
    row.update(
        exact_ones=ones,
        frac_exact_ones=None if ones is None else ones / max(est.n, 1),
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
        ("model", "model"),
        ("weights_sha256", "weights_sha256"),
        ("image", "image"),
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
    """Write :func:`unit_bands` rows as CSV (band names carry the thresholds; ``model`` and
    ``image`` columns say whose counts they are: ``image`` is empty unless the rows carry one).
    """
    lo, hi = rows[0]["thresholds"] if rows else PLATEAU
    cols = _csv_columns(lo, hi)
    if rows and "above_lower" in rows[0]:  # estimates: confidence intervals of the counts
        cols += [(f"{b}_{side}", f"{b}_{side}") for b in BANDS for side in ("lower", "upper")]
        cols += [("n_probes", "n_probes"), ("lanczos_steps", "lanczos_steps"), ("confidence", "confidence")]
    table = [{name: r.get(key) for name, key in cols} for r in rows]
    return write_csv(table, path, [name for name, _ in cols], float_format=".6g")


@dataclass(frozen=True)
class Panel:
    """One panel of Figure 1.

    Attributes:
        key: ``"unit"`` (unit ``S.5`` of the stage), ``"downsampling"`` (its first unit) or
            ``"stage"`` (the stage operator).
        stage: 1-based stage.
        label: the panel's title.
        address: the unit's address (``None`` for stages).
    """

    key: str
    stage: int
    label: str
    address: str | None = None


def figure1_panels(net, unit_index: int = 5, stages: bool = True) -> list[Panel]:
    """The panels of Figure 1 for ``net``: per stage, unit ``S.unit_index`` (clipped to the
    stage), unit ``S.1`` and (with ``stages``) the stage, in the order unit, first unit, stage.
    """
    if not isinstance(unit_index, int) or isinstance(unit_index, bool) or unit_index < 1:
        raise ValueError(f"unit_index must be a positive int, got {unit_index!r}")
    out: dict[str, list[Panel]] = {"unit": [], "downsampling": [], "stage": []}
    for s, st in enumerate(net.stages, start=1):
        k = min(unit_index, len(st))
        out["unit"].append(Panel("unit", s, f"unit {s}.{k}", f"{s}.{k}"))
        out["downsampling"].append(Panel("downsampling", s, f"unit {s}.1 ({net.unit(s, 1).kind})", f"{s}.1"))
        if stages:
            out["stage"].append(Panel("stage", s, f"stage {s}"))
    return out["unit"] + out["downsampling"] + out["stage"]


@dataclass(frozen=True)
class PanelPlan:
    """How a panel's spectrum is computed.

    Attributes:
        dtype: dtype of the dense eigenproblems (units: the core or Gram built from the float64
            linearization; stages: the linearization itself).
        stage_method: ``"exact"``, ``"topk"`` or ``"auto"`` (exact when the smaller side is at
            most ``max_dense``).
        stage_k: values per stage for top-k.
        max_dense: size limit of ``"auto"``.
        unit_max: units with more values get their ``unit_k`` largest only (``None``: all exact).
        unit_k: values per unit above ``unit_max``.
    """

    dtype: torch.dtype = torch.float64
    stage_method: str = "auto"
    stage_k: int = 256
    max_dense: int = 8192
    unit_max: int | None = None
    unit_k: int = 64

    def __post_init__(self) -> None:
        if self.stage_method not in ("auto", "exact", "topk"):
            raise ValueError(f"stage_method must be 'auto', 'exact' or 'topk', got {self.stage_method!r}")
        if self.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {self.dtype}")
        for name in ("stage_k", "max_dense", "unit_k"):
            v = getattr(self, name)
            check_int(name, v)
        check_int("unit_max", self.unit_max, optional=True)

    def parts(self) -> dict:
        """The plan as JSON-able cache-key parts."""
        return {
            "dtype": str(self.dtype).replace("torch.", ""),
            "stage_method": self.stage_method,
            "stage_k": self.stage_k,
            "max_dense": self.max_dense,
            "unit_max": self.unit_max,
            "unit_k": self.unit_k,
            "exact_revision": EXACT_REVISION,
        }


FULL_PLAN = PanelPlan(dtype=torch.float32)
"""The report's Figure 1: every value, in float32 (only the plot and the mean read them; band
fractions come from exact counts), stages exact up to 8192 values, stage 1 of CIFAR ResNets
its 256 largest."""


def panel_spectrum(linearize, panel: Panel, plan: PanelPlan = PanelPlan()) -> SpectrumResult:
    """The spectrum of one Figure 1 panel at one image.

    Args:
        linearize: ``dtype -> Linearization`` at the image (called with float64 for units,
            with ``plan.dtype`` for stages; e.g. a cached ``net.linearize``).
        panel: a :class:`Panel`.
        plan: a :class:`PanelPlan`.

    Returns:
        the :class:`~linstab.linalg.SpectrumResult` (values descending; ``info["error"]``: the
        largest bound of ``|s_hat - s|`` from :func:`~linstab.spectra.accuracy.value_error`;
        ``info["sq_error"]``: the bound of ``|s_hat^2 - s^2|`` of Gram-type exact routes, else
        ``None``).
    """
    if panel.key == "stage":
        op = linearize(plan.dtype).stage(panel.stage)
        n = min(op.shape)
        meth = plan.stage_method
        if meth == "auto":
            meth = "exact" if n <= plan.max_dense else "topk"
        res = (
            spectrum(op, "topk", k=min(plan.stage_k, n))
            if meth == "topk"
            else spectrum(op, "exact", dtype=plan.dtype, progress=False)
        )
    else:
        s_, k_ = (int(v) for v in panel.address.split("."))
        op = linearize(torch.float64).unit(s_, k_)
        n = min(op.shape)
        if plan.unit_max is not None and n > plan.unit_max:
            res = spectrum(linearize(plan.dtype).unit(s_, k_), "topk", k=min(plan.unit_k, n))
        else:
            res = spectrum(op, "exact", dtype=plan.dtype)
    err = value_error(res)
    res.info["error"] = float(err.max()) if err.numel() else 0.0
    res.info["sq_error"] = (
        squared_error(res) if res.route in EXACT_ROUTES and res.route != "dense-svd" else None
    )
    res.info["n"] = n
    return res


def linearizer(net, image: torch.Tensor):
    """``dtype -> net.linearize(image, dtype)``, each dtype linearized once."""
    memo: dict = {}

    def get(dtype: torch.dtype):
        if dtype not in memo:
            memo[dtype] = net.linearize(image, dtype=dtype)
        return memo[dtype]

    return get


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
    plan: PanelPlan | None = None,
) -> dict:
    """Spectra for the paper's Figure 1 for one network: unit ``S.unit_index`` of each stage,
    the first (down-sampling) unit of each stage, and each stage, at several images.

    Args:
        net: a :class:`~linstab.network.Network`.
        images: ``(N, C, H, W)`` in [0, 1].
        unit_index: the unit of each stage for the first row (paper: 5); clipped to the stage.
        stages: include the stage spectra (the expensive part).
        dtype: dtype of the dense eigenproblems (see :class:`PanelPlan`).
        stage_method: ``"exact"``, ``"topk"`` or ``"auto"`` (exact when the smaller side is at
            most ``max_dense``, else the ``stage_k`` largest values).
        stage_k: values per stage for ``"topk"``.
        max_dense: size limit of ``"auto"``.
        image_ids: labels of the images.
        progress: show a progress bar.
        plan: a whole :class:`PanelPlan` (overrides ``dtype``, ``stage_method``, ``stage_k``,
            ``max_dense``).

    Returns:
        ``{"model", "images", "rows": {"unit": [...], "downsampling": [...], "stage": [...]}}``;
        each panel is ``{"stage", "label", "address", "n", "method", "spectra": [np.ndarray per
        image], "errors": [largest value error bound per image], "exact_ones": [...], "alpha"}``.
    """
    plan = plan or PanelPlan(dtype=dtype, stage_method=stage_method, stage_k=stage_k, max_dense=max_dense)
    check_int("unit_index", unit_index)
    images = net.check_input(images)
    ids = image_ids or [str(i) for i in range(images.shape[0])]
    panels = figure1_panels(net, unit_index, stages)
    rows, recs = panel_records(panels)
    if not stages:
        rows.pop("stage")
    total = len(panels) * images.shape[0]
    bar = progress_bar(total=total, desc=f"spectra {net.name}", unit="spectrum", disable=not progress)
    for i in range(images.shape[0]):
        lin = linearizer(net, images[i])
        for p in panels:
            bar.set_postfix_str(f"image {ids[i]} {p.label}")
            with scope(panel=p.label, image=ids[i]):
                res = panel_spectrum(lin, p, plan)
            add_panel(recs[p], *panel_result(res))
            bar.update(1)
    bar.close()
    return {"model": net.name, "images": ids, "rows": rows}


def panel_records(panels: list[Panel]) -> tuple[dict[str, list[dict]], dict[Panel, dict]]:
    """Empty ``scree_data`` panel records: ``(rows by key, record per panel)``."""
    rows: dict[str, list[dict]] = {"unit": [], "downsampling": [], "stage": []}
    recs = {}
    for p in panels:
        rec = {"stage": p.stage, "label": p.label, "spectra": []}
        if p.address is not None:
            rec["address"] = p.address
        rows[p.key].append(rec)
        recs[p] = rec
    return rows, recs


def panel_result(res: SpectrumResult) -> tuple[dict, dict]:
    """A :func:`panel_spectrum` result as ``({"values": array}, meta)`` (what a cache stores)."""
    meta = {
        "n": int(res.info.get("n", min(res.shape) if res.shape else res.values.numel())),
        "method": f"{res.method}:{res.route}",
        "dtype": str(res.dtype).replace("torch.", ""),
        "error": float(res.info.get("error", 0.0)),
        "sq_error": res.info.get("sq_error"),
        "exact_ones": res.n_exact_ones,
        "alpha": res.alpha,
    }
    return {"values": res.values.numpy()}, meta


def add_panel(rec: dict, arrays: dict, meta: dict) -> None:
    """Append one image's :func:`panel_result` to a ``scree_data`` panel record."""
    rec.setdefault("n", meta["n"])
    rec.setdefault("method", []).append(meta["method"])
    rec.setdefault("dtype", meta["dtype"])
    rec["spectra"].append(np.asarray(arrays["values"], dtype=np.float64))
    rec.setdefault("errors", []).append(meta["error"])
    rec.setdefault("sq_errors", []).append(meta.get("sq_error"))
    rec.setdefault("exact_ones", []).append(meta["exact_ones"])
    rec["alpha"] = meta["alpha"]


QUICK_EXACT_MAX = 4096  # quick mode: exact spectra up to this size, top-k values above it


QUICK_TOPK = 64


QUICK_PLAN = PanelPlan(
    dtype=torch.float64, stage_method="topk", stage_k=QUICK_TOPK, unit_max=QUICK_EXACT_MAX, unit_k=QUICK_TOPK
)
"""Figure 1 in quick mode: exact spectra for units with at most :data:`QUICK_EXACT_MAX`
values, the :data:`QUICK_TOPK` largest for larger units and for every stage."""
