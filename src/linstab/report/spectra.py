"""Report section: Figures 1 and 2 (scree plots, band fractions) and their findings.

Which images each statistic uses (``docs/findings.md``):

* Figure 1 (whole spectra of unit ``S.5``, the first unit of each stage and the stages): the
  first 5 images (quick: 2), as the paper;
* band counts of the fifth units (plateau, above 1, rank): every image of the report (quick:
  the first 3, units up to ``2 * QUICK_EXACT_MAX`` values);
* Figure 2 (band counts of every unit) and its trends: a sweep folder when one is given, else
  the first 5 images (quick: the first, units up to ``2 * QUICK_EXACT_MAX`` values);
* image dependence against architecture changes: every image (quick: 3), on the unit of
  Figure 5.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..analyses.ablations import Variant
from ..analyses.image_dependence import image_vs_architecture, model_vs_architecture
from ..analyses.network_spectra import (
    FULL_PLAN,
    QUICK_EXACT_MAX,
    QUICK_PLAN,
    QUICK_TOPK,
    PanelPlan,
    add_panel,
    figure1_panels,
    linearizer,
    panel_records,
    panel_result,
    panel_spectrum,
    unit_bands,
)
from ..analyses.statistics import bootstrap_ci
from ..analyses.trends import by_image, network_trend, regular_units, stage_trend
from ..io.cache import tensor_hash
from ..io.profile import scope
from ..plots.spectra import plot_band_fractions, plot_scree
from ..spectra.accuracy import band_fraction_bounds, error_from_squared
from . import rules as R
from .context import BAND_ESTIMATE, Finding, ReportContext, Section
from .findings import estimate, make_finding, signed_rank
from .sweep import sweep_band_rows, sweep_checksums
from .variants import (
    ALPHA_STEP,
    T_STEP,
    ablation_unit,
    dependence_images,
    prefetch_variants,
    variant_cached,
    variant_unit,
)

N_SCREE = (5, 2)
"""Images of Figure 1 (full, quick)."""
N_BANDS = (5, 1)
"""Images of Figure 2 without a sweep folder (full, quick)."""
N_FIFTH = (None, 3)
"""Images of the fifth-unit band counts (full: all, quick)."""
BAND_KEYS = ("above", "plateau", "below", "zero")


def _n(ctx: ReportContext, sizes: tuple[int | None, int], total: int) -> int:
    k = sizes[1] if ctx.cfg.quick else sizes[0]
    return total if k is None else min(k, total)


def _scree_cached(ctx: ReportContext, net, images, ids: list[str], keep=None) -> dict:
    """Figure 1's panels (:func:`~linstab.analyses.network_spectra.scree_data` layout), one
    cache entry per model, image and panel, computed by :func:`panel_spectrum` with the
    report's plan (full: float32 values, see :data:`FULL_PLAN`; quick: :data:`QUICK_PLAN`).
    ``keep``: a predicate on the panels (default: all of them).
    """
    plan = figure1_plan(ctx, net)
    panels = [p for p in figure1_panels(net) if keep is None or keep(p)]
    rows, recs = panel_records(panels)
    todo = sorted(
        ((i, p) for i in range(images.shape[0]) for p in panels), key=lambda t: -_panel_cost(net, t[1], plan)
    )
    model_key, hashes = ctx.model_key(net), [tensor_hash(images[i]) for i in range(images.shape[0])]

    def compute(i, p):
        lin = linearizer(net, images[i])
        with scope(panel=p.label, image=ids[i]):
            return panel_result(panel_spectrum(lin, p, plan))

    items = [
        (
            "figure1-panel",
            {
                "model": model_key,
                "image": hashes[i],
                "what": "figure1-panel",
                "panel": [p.key, p.stage, p.address],
                "plan": plan.parts(),
            },
            functools.partial(compute, i, p),
        )
        for i, p in todo
    ]
    bar = ctx.bar(len(items), f"spectra {net.name}")
    got = ctx.cache.get_or_compute_many(items, ctx.cfg.n_workers, on_done=bar.update)
    bar.close()
    by_key = {(i, p): g for (i, p), g in zip(todo, got, strict=True)}
    for i in range(images.shape[0]):
        for p in panels:
            add_panel(recs[p], *by_key[(i, p)])
    return {"model": net.name, "images": list(ids), "rows": rows}


ESTIMATE_TOPK = 32
"""Figure 1 values of units and stages too large for exact spectra (the largest ones)."""


def figure1_plan(ctx: ReportContext, net) -> PanelPlan:
    """Figure 1's plan: quick, full (exact units), or -- for networks with units above
    :attr:`~linstab.report.context.ReportConfig.exact_max` -- exact up to that size and the
    :data:`ESTIMATE_TOPK` largest values above it and for large stages.
    """
    if ctx.cfg.quick:
        return QUICK_PLAN
    if not ctx.cfg.estimated_units(net):
        return FULL_PLAN
    return PanelPlan(
        dtype=torch.float32, stage_k=ESTIMATE_TOPK, unit_max=ctx.cfg.exact_max, unit_k=ESTIMATE_TOPK
    )


def band_rows(ctx: ReportContext, net, images, ids: list[str], addresses: list[str]) -> list[dict]:
    """Band counts (Figure 2's bands) of the units ``addresses`` at every image, one cache entry
    per model, image and unit (computed by the report's worker processes); each row carries its
    ``image`` id, in image-major order. Exact (inertia) counts, except for units the
    configuration estimates (:meth:`~linstab.report.context.ReportConfig.estimated`): their rows
    are SLQ estimates (float32 linearization, :data:`~linstab.report.context.BAND_ESTIMATE`)
    with ``*_lower``/``*_upper`` 95% intervals and ``route = "estimate-slq"``.
    """
    todo = [(i, a) for i in range(images.shape[0]) for a in addresses]
    size = {u.address: u.n_in * u.n_out for u in net.units}
    est = set(ctx.cfg.estimated_units(net))
    order = sorted(range(len(todo)), key=lambda k: -size.get(todo[k][1], 0))
    hashes = [tensor_hash(images[i]) for i in range(images.shape[0])]
    options = {**BAND_ESTIMATE, "seed": ctx.cfg.seed}

    def compute(i, addr):
        with scope(unit=addr, image=ids[i]):
            if addr in est:
                r = unit_bands(
                    net, images[i], units=[addr], progress=False, dtype=torch.float32, estimate=options
                )[0]
            else:
                r = unit_bands(net, images[i], units=[addr], progress=False, exact_ones=False)[0]
        return {}, {"row": {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()}}

    keys, items, new = {}, [], []
    for k in order:
        i, addr = todo[k]
        parts = {
            "model": ctx.model_key(net),
            "image": hashes[i],
            "what": "unit-bands",
            "unit": addr,
            "thresholds": [0.99, 1.01],
            "zero_tol": 1e-6,
            "exact_ones": "when free",
        }
        if addr in est:
            parts.update(route="estimate-slq", estimate=options, dtype="float32")
        keys[k] = ctx.cache.key(parts)
        if keys[k] not in ctx.band_memo:  # Figures 1-2 and the fifth units share rows
            new.append(k)
            items.append(("unit-bands", parts, functools.partial(compute, i, addr)))
    bar = ctx.bar(len(items), f"bands {net.name}")
    got = ctx.cache.get_or_compute_many(items, ctx.cfg.n_workers, on_done=bar.update)
    bar.close()
    for k, (_, meta) in zip(new, got, strict=True):
        ctx.band_memo[keys[k]] = meta["row"]
    return [{**ctx.band_memo[keys[k]], "image": ids[i]} for k, (i, _) in enumerate(todo)]


# Relative costs of _panel_cost, in units of one n^3 dense eigensolve of size n: measured on
# ResNet-56 (one thread, float32): unit 1.1's whole spectrum (n = 16384) about 60 s, stage 2's
# materialization (8192 x 16384 through 9 units) about 9 s, stage 1's top-256 about 10 s.
_COST_MATERIALIZE = 530.0  # per entry and unit of a stage materialized
_COST_TOPK = 1.9e4  # per value, input dimension and unit of a top-k run


def _panel_cost(net, p, plan: PanelPlan) -> float:
    """A cost estimate of a Figure 1 panel under ``plan`` (to schedule the costliest first, so
    that no long item starts last): a whole spectrum costs about ``n^3`` (the eigensolver), a
    stage's dense route adds its materialization, a top-k run about ``k n`` per unit.
    """
    if p.address is not None:
        s, k = (int(v) for v in p.address.split("."))
        u = net.unit(s, k)
        n = min(u.n_in, u.n_out)
        if plan.unit_max is not None and n > plan.unit_max:
            return _COST_TOPK * min(plan.unit_k, n) * u.n_in
        return float(n) ** 3
    st = net.stages[p.stage - 1]
    n_in, n_out = st[0].n_in, st[-1].n_out
    n = min(n_in, n_out)
    exact = plan.stage_method == "exact" or (plan.stage_method == "auto" and n <= plan.max_dense)
    if exact:
        return float(n) ** 3 + _COST_MATERIALIZE * n_out * n_in * len(st)
    return _COST_TOPK * min(plan.stage_k, n) * n_in * len(st)


def fifth_units(net) -> list[str]:
    """The unit of each stage in Figure 1's top row: ``S.5`` (the last unit of a shorter stage)."""
    return [f"{s}.{min(5, len(st))}" for s, st in enumerate(net.stages, start=1)]


def _quick_units(ctx: ReportContext, net, addresses: list[str]) -> list[str]:
    if not ctx.cfg.quick:
        return addresses
    keep = {u.address for u in net.units if u.n_out <= 2 * QUICK_EXACT_MAX}
    return [a for a in addresses if a in keep]


def figure2_rows(ctx: ReportContext, net, images, ids: list[str]) -> tuple[list[dict], str]:
    """Band rows of every unit at several images for Figure 2 and its trends, and their source.

    From :attr:`ReportConfig.sweep_dir` when it holds band rows of this model (all its images),
    else computed for the first :data:`N_BANDS` images.
    """
    if ctx.cfg.sweep_dir is not None:
        rows = sweep_band_rows(ctx.cfg.sweep_dir, net.name, sweep_checksums(net))
        if rows:
            imgs = list(dict.fromkeys(r["image"] for r in rows))
            lossy = any(r.get("lossy") for r in rows)
            desc = (
                f"sweep folder {ctx.cfg.sweep_dir}: {len(imgs)} images"
                f" ({'lossy JPEG' if lossy else 'lossless'}; {imgs[0]} ... {imgs[-1]})"
            )
            return rows, desc
    k = _n(ctx, N_BANDS, images.shape[0])
    units = _quick_units(ctx, net, [u.address for u in net.units])
    rows = band_rows(ctx, net, images[:k], ids[:k], units)
    desc = ctx.images_text(k)
    if ctx.cfg.sweep_dir is not None:
        desc += f" (the sweep folder has no band rows of {net.name})"
    return rows, desc


def _band_summary(rows: list[dict], seed: int) -> list[dict]:
    out = []
    units: dict[tuple, list[dict]] = {}
    for r in rows:
        units.setdefault((r["model"], int(r["stage"]), int(r["unit"]), r["address"], r["kind"]), []).append(r)
    for (model, stage, unit, addr, kind), rs in units.items():
        for band in BAND_KEYS:
            est = bootstrap_ci([float(r[f"frac_{band}"]) for r in rs], n_resamples=2000, seed=seed)
            out.append(
                {
                    "model": model,
                    "stage": stage,
                    "unit": unit,
                    "address": addr,
                    "kind": kind,
                    "band": band,
                    "median": est.value,
                    "low": est.low,
                    "high": est.high,
                    "n_images": est.n,
                }
            )
    return out


def _frac(p: dict, i: int, side: int = 1) -> float:
    """Panel ``p``'s fraction of values in [0.99, 1.01] at image ``i``: exact (band counts by
    inertia) for units; for stages the upper (``side=1``) or lower (``side=0``) end of the
    fraction allowed by the values' error bounds (:func:`_attach_fractions`).
    """
    return float(p["frac"][i][side])


def _value_errors(p: dict, i: int) -> np.ndarray:
    """Per-value error bounds of panel ``p``'s values at image ``i``
    (:mod:`linstab.spectra.accuracy`).
    """
    s = np.asarray(p["spectra"][i], dtype=np.float64)
    d = (p.get("sq_errors") or [None] * len(p["spectra"]))[i]
    if d is not None:
        return error_from_squared(s, d).numpy()
    return np.full_like(s, (p.get("errors") or [0.0] * len(p["spectra"]))[i])


def _attach_fractions(ctx: ReportContext, net, scree: dict, images, ids: list[str]) -> None:
    """Give every whole-spectrum panel of ``scree`` its per-image band fraction ``frac``
    (``(low, high)``) and ``frac_source``: unit panels from exact band counts (the cache
    entries of Figure 2's rows, so usually free), stage panels from their values and error
    bounds (:func:`~linstab.spectra.accuracy.band_fraction_bounds`).
    """
    n_img = len(scree["images"])
    units = [
        p
        for key in ("unit", "downsampling")
        for p in scree["rows"][key]
        if all(_whole(p, i) for i in range(n_img))
    ]
    addrs = list(dict.fromkeys(p["address"] for p in units))
    exact = {}
    if addrs:
        for r in band_rows(ctx, net, images[:n_img], ids[:n_img], addrs):
            exact[(r["address"], r["image"])] = float(r["frac_plateau"])
    for p in units:
        p["frac"] = [(exact[(p["address"], ids[i])],) * 2 for i in range(n_img)]
        p["frac_source"] = "exact band counts (inertia, float64)"
    big = set(ctx.cfg.estimated_units(net))
    partial = [
        p
        for key in ("unit", "downsampling")
        for p in scree["rows"][key]
        if p["address"] in big and not all(_whole(p, i) for i in range(n_img))
    ]
    if partial:
        addrs = list(dict.fromkeys(p["address"] for p in partial))
        got = band_rows(ctx, net, images[:n_img], ids[:n_img], addrs)
        rows = {(r["address"], r["image"]): r for r in got}
        for p in partial:
            rs = [rows[(p["address"], ids[i])] for i in range(n_img)]
            p["frac"] = [(r["plateau_lower"] / r["n"], r["plateau_upper"] / r["n"]) for r in rs]
            p["frac_estimate"] = [r["frac_plateau"] for r in rs]
            p["frac_source"] = f"estimate: 95% interval of the count (SLQ, {rs[0]['n_probes']} probes)"
    for p in scree["rows"].get("stage", []):
        if not all(_whole(p, i) for i in range(n_img)):
            continue
        p["frac"] = [band_fraction_bounds(p["spectra"][i], _value_errors(p, i)) for i in range(n_img)]
        p["frac_source"] = f"{p.get('dtype', 'float64')} values +- their error bound (range)"


def _whole(panel: dict, i: int) -> bool:
    return len(panel["spectra"][i]) == int(panel.get("n", len(panel["spectra"][i])))


def _dependence(ctx: ReportContext, net, images, ids: list[str]) -> tuple[list[dict], str, int]:
    """Per-image distances of the image-dependence test on the unit of Figure 5."""
    u, _ = variant_unit(ctx, net)
    if u is None:
        return [], "", 0
    k = dependence_images(ctx, images.shape[0])
    seeds = [ctx.cfg.seed + s for s in range(1 if ctx.cfg.quick else 2)]
    variants = [Variant("none", 1.0), Variant("alpha", ALPHA_STEP), *(Variant("t", T_STEP, s) for s in seeds)]
    prefetch_variants(
        ctx,
        net,
        [(images[i], u, v, True) for i in range(k) for v in variants],
        f"image dependence {net.name}",
    )
    trained, alpha, interp = [], [], []
    for i in ctx.progress(range(k), f"image dependence {net.name}"):
        sv = [
            variant_cached(ctx, net, images[i], u, v, spectrum_values=True).singular_values for v in variants
        ]
        trained.append(sv[0])
        alpha.append(sv[1])
        interp.append(sv[2:])
    if k < 2:
        return [], u.address, len(seeds)
    rows = image_vs_architecture(trained, alpha, interp, ALPHA_STEP)
    for r, image_id, s in zip(rows, ids[:k], trained, strict=True):
        r["image"] = image_id
        r["unit"] = u.address
        r["trained"] = s  # the unit's spectrum (the two-model finding compares them)
    return rows, u.address, len(seeds)


def _is_downsampling_panel(net, p) -> bool:
    """A Figure 1 panel of a down-sampling unit (the first unit of a stage that shrinks it)."""
    return p.key == "downsampling" and net.unit(p.stage, 1).kind == "downsampling"


def _reference_scree(ctx: ReportContext, reference, images, ids: list[str]) -> dict:
    """Figure 1's down-sampling panels of the shortcut reference, with their band fractions."""
    with scope(figure="figure1", model=reference.name):
        d = _scree_cached(
            ctx, reference, images, ids, keep=functools.partial(_is_downsampling_panel, reference)
        )
        _attach_fractions(ctx, reference, d, images, ids)
    d["shortcuts"] = ", ".join(
        sorted({reference.unit(p["stage"], 1).shortcut for p in d["rows"]["downsampling"]})
    )
    d["title"] = f"{reference.name}\nshortcut reference ({d['shortcuts']}):\ndown-sampling units only"
    return d


def section_spectra(ctx: ReportContext, nets, images, reference=None, reference_note: str = "") -> Section:
    """Figures 1 and 2: scree plots and band fractions of every unit, with findings.

    ``reference``: a network whose down-sampling units are shown beside ``nets`` in Figure 1 and
    tested for the finding on down-sampling spectra (the shortcut type's comparison, see
    :func:`~linstab.report.build.shortcut_reference`); ``reference_note``: why there is none.
    """
    sec = Section("Spectra of unit and stage Jacobians (Figures 1 and 2)")
    ids = ctx.image_ids
    n_scree = _n(ctx, N_SCREE, images.shape[0])
    screes = []
    for net in nets:
        with scope(figure="figure1", model=net.name):
            screes.append(_scree_cached(ctx, net, images[:n_scree], ids[:n_scree]))
    ref = _reference_scree(ctx, reference, images[:n_scree], ids[:n_scree]) if reference is not None else None
    shown = screes + ([ref] if ref is not None else [])
    paths = plot_scree(shown if len(shown) > 1 else shown[0], ctx.fig_dir / "figure1_scree")
    sec.figures.append(ctx.rel(paths[0]))
    sec.text.append(f"Figure 1 images: {ctx.images_text(n_scree)}.")
    if ref is not None:
        mine = sorted({u.shortcut for net in nets for u in net.units if u.kind == "downsampling"})
        sec.text.append(
            f"Shortcut reference: the down-sampling units of {reference.name} ({ref['shortcuts']} shortcuts) "
            f"beside those of the report's models ({', '.join(mine)}) in Figure 1, and the finding on "
            "down-sampling spectra tested on it too."
        )
    elif reference_note:
        sec.text.append(reference_note)
    arrays = {}
    for d in shown:
        for key, panels in d["rows"].items():
            for p in panels:
                for i, sv in enumerate(p["spectra"]):
                    name = f"{d['model']}|{key}|{p['label']}|image{d['images'][i]}"
                    arrays[name] = sv
                    arrays[name + "|error"] = _value_errors(p, i)
    sec.data.append(ctx.write_npz("figure1_spectra.npz", **arrays))
    if ctx.cfg.quick:
        sec.text.append(
            f"Quick mode: exact spectra for units with at most {QUICK_EXACT_MAX} singular values, "
            f"the {QUICK_TOPK} largest for larger units and for the stages; band counts for units "
            f"with at most {2 * QUICK_EXACT_MAX} values."
        )
    for net in nets:
        big = ctx.cfg.estimated_units(net)
        if big:
            sec.text.append(
                f"{net.name}: {len(big)} of {len(net.units)} units have more than {ctx.cfg.exact_max:,} "
                f"values ({', '.join(big)}): ESTIMATES. Figure 1 shows their {ESTIMATE_TOPK} largest "
                "singular values (and those of stages above 8192 values); their band counts in Figures 1-2 "
                "are stochastic Lanczos quadrature estimates whose 95% confidence intervals (Gauss-Radau "
                f"bounds plus sampling error, target +-{100 * BAND_ESTIMATE['accuracy']:g}% of n) are in "
                "figure2_bands.csv (*_lower, *_upper). The image-dependence test, the ablations and the "
                "eigenvalues need whole spectra and are left out for such units."
            )
    panel_rows, fig2_all, summary_all, single_all = [], [], [], []
    deps: list[tuple[list[dict], str]] = []
    for net, d in zip(nets, screes, strict=True):
        with scope(figure="figure1", model=net.name):
            _attach_fractions(ctx, net, d, images, ids)
        panel_rows.extend(_panel_row(ctx, net.name, p, n_scree) for p in _all_panels(d))
        with scope(figure="figure2", model=net.name):
            rows, source = figure2_rows(ctx, net, images, ids)
        fig2_all.extend(rows)
        summary_all.extend(_band_summary(rows, ctx.cfg.seed))
        first = next(iter(by_image(rows).values()), [])
        single_all.extend(first)
        fifth_addr = _quick_units(ctx, net, fifth_units(net))
        k5 = _n(ctx, N_FIFTH, images.shape[0])
        with scope(figure="fifth-unit-bands", model=net.name):
            fifth = band_rows(ctx, net, images[:k5], ids[:k5], fifth_addr)
        with scope(figure="image-dependence", model=net.name):
            dep, dep_unit, dep_seeds = _dependence(ctx, net, images, ids)
        sec.data.append(ctx.write_csv(f"image_dependence_{_safe(net.name)}.csv", _dep_table(dep)))
        deps.append((dep, dep_unit))
        ctx.findings.extend(
            _findings(
                ctx, net, d, n_scree, rows, source, fifth, k5, fifth_addr, dep, dep_unit, dep_seeds, len(nets)
            )
        )
        sec.text.append(f"{net.name}: Figure 2 band fractions from {source}.")
    if ref is not None:
        panel_rows.extend(_panel_row(ctx, reference.name, p, n_scree) for p in _all_panels(ref))
        ds = ref["rows"]["downsampling"]
        n_img = len(ds[0]["spectra"]) if ds else 0
        ctx.findings.append(
            _downsampling_finding(
                f"Spectra ({reference.name}, shortcut reference)",
                reference,
                ds,
                n_img,
                ctx.images_text(n_scree),
                ctx.cfg.seed,
            )
        )
    if len(nets) == 2:
        finding, rows = _model_finding(ctx, nets, deps)
        ctx.findings.append(finding)
        if rows:
            sec.data.append(ctx.write_csv("model_dependence.csv", rows))
    sec.tables.append((f"Figure 1 panels ({ctx.images_text(n_scree)})", panel_rows))
    sec.data.append(ctx.write_csv("figure1_panels.csv", panel_rows))
    per_model = _images_per_model(fig2_all)
    counts = "; ".join(f"{m}: {n} image{'s' if n != 1 else ''}" for m, n in per_model.items())
    if max(per_model.values(), default=0) >= 2:
        title = (
            f"Figure 2: median band fraction per unit with 95% CI over images; dashed: one image ({counts})"
        )
    else:
        title = f"Figure 2: band fraction per unit at one image, no interval ({counts})"
    paths = plot_band_fractions(
        summary_all,
        single_all,
        ctx.fig_dir / "figure2_bands",
        title=title,
        single_label=f"one image ({single_all[0]['image']})" if single_all else "one image",
    )
    sec.figures.append(ctx.rel(paths[0]))
    sec.data.append(ctx.write_csv("figure2_bands.csv", fig2_all))
    sec.data.append(ctx.write_csv("figure2_band_summary.csv", summary_all))
    sec.tables.append(
        (
            "Figure 2: median fraction per unit and band over the images (95% CI)",
            [
                {k: r[k] for k in ("model", "address", "kind", "band", "median", "low", "high", "n_images")}
                for r in summary_all
            ],
        )
    )
    return sec


def _all_panels(scree: dict) -> list[dict]:
    rows = scree["rows"]
    return rows["unit"] + rows["downsampling"] + rows.get("stage", [])


def _panel_row(ctx: ReportContext, model: str, p: dict, n_scree: int) -> dict:
    """A row of ``figure1_panels.csv``: a panel's size, values, fraction near 1 and errors."""
    spectra = p["spectra"]
    return {
        "model": model,
        "panel": p["label"],
        "n": int(p.get("n", len(spectra[0]))),
        "values_computed": min(len(s) for s in spectra),
        "images": ctx.images_text(n_scree),
        "median_fraction_in_[0.99,1.01]": (
            float(np.median(p.get("frac_estimate") or [_frac(p, i) for i in range(len(spectra))]))
            if "frac" in p
            else None
        ),
        "fraction_from": p.get("frac_source", ""),
        "median_sigma_max": float(np.median([np.asarray(s)[0] for s in spectra])),
        "values": f"{', '.join(sorted(set(p.get('method', []))))} ({p.get('dtype', 'float64')})",
        "max_value_error": float(max(p.get("errors", [0.0]))),
    }


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _images_per_model(rows: list[dict]) -> dict[str, int]:
    out: dict[str, set] = {}
    for r in rows:
        out.setdefault(r["model"], set()).add(r["image"])
    return {m: len(v) for m, v in out.items()}


def _dep_table(dep: list[dict]) -> list[dict]:
    return [
        {
            "image": r["image"],
            "unit": r["unit"],
            "d_image": r["d_image"],
            "d_alpha_1.25": r["d_alpha"],
            "d_t_0.75_mean": r["d_t_mean"],
            "d_arch": r["d_arch"],
            "ratio_mean": float(np.mean(r["ratio"])),
            "d_scale": r["d_scale"],
        }
        for r in dep
    ]


def _findings(
    ctx: ReportContext,
    net,
    scree: dict,
    n_scree: int,
    fig2: list[dict],
    fig2_source: str,
    fifth: list[dict],
    k5: int,
    fifth_addr: list[str],
    dep: list[dict],
    dep_unit: str,
    dep_seeds: int,
    n_models: int,
) -> list[Finding]:
    section = "Spectra" + (f" ({net.name})" if n_models > 1 else "")
    seed = ctx.cfg.seed
    out: list[Finding] = []
    nst = len(net.stages)
    imgs5 = ctx.images_text(k5)
    per = by_image(fifth)
    where = ", ".join(fifth_addr)

    def fifth_stat(key, reduce=np.mean, stages=None):
        vals = []
        for rows in per.values():
            rs = [r for r in rows if stages is None or int(r["stage"]) in stages]
            vals.append(float(reduce([float(r[key]) for r in rs])) if rs else math.nan)
        return np.array(vals)

    def per_stage(key):
        return ", ".join(
            f"{a}: {100 * np.median([float(r[key]) for r in fifth if r['address'] == a]):.1f}%"
            for a in fifth_addr
        )

    # S1: the plateau
    v = fifth_stat("frac_plateau")
    est = estimate(v, seed)
    have_ex = [r for r in fifth if r.get("frac_exact_ones") is not None]
    ex = np.array([float(r["frac_exact_ones"]) for r in have_ex]) if have_ex else None
    out.append(
        make_finding(
            section,
            "Most singular values of the (regular) unit Jacobians are 1: a plateau in the scree plot (Sec. "
            "3.2, "
            "Fig. 1 top, abstract).",
            f"per image: fraction of singular values in [0.99, 1.01], mean over units {where}; median over "
            "images",
            R.level_above(est, R.MOST, R.PLATEAU_MIN),
            est,
            images=imgs5,
            measured=f"{est.text('.3g', 100, '%')}; per unit (median): {per_stage('frac_plateau')}"
            + (
                f"; exactly 1 by structure: {100 * np.median(ex):.1f}% (median over {len(ex)} of "
                f"{len(fifth)} unit-image pairs; the others have a rank-deficient Q, where the count "
                "needs the whole spectrum)"
                if ex is not None
                else ""
            ),
        )
    )
    # S2: unstable directions
    v = fifth_stat("frac_above")
    est = estimate(v, seed)
    out.append(
        make_finding(
            section,
            "A non-negligible number of singular values lies above 1: the units are unstable in those "
            "directions (Sec. 3.2).",
            f"per image: fraction of singular values > 1.01, mean over units {where}; median over images",
            R.level_above(est, R.NON_NEGLIGIBLE, 0.0),
            est,
            images=imgs5,
            measured=f"{est.text('.3g', 100, '%')}; per unit: {per_stage('frac_above')}",
        )
    )
    # S3: high rank in stages 1..L-1
    early = set(range(1, nst))
    have_early = [a for a in fifth_addr if int(a.split(".")[0]) in early]
    if have_early:
        v = np.array([1 - x for x in fifth_stat("frac_zero", np.max, early)])
        est = estimate(v, seed)
        dec = R.level_above(est, R.HIGH_RANK)
    else:
        why = (
            f"{net.name} has one stage (the claim is about stages 1..L-1)"
            if nst < 2
            else "no fifth unit of stages 1..L-1 in this run (quick mode limits units)"
        )
        est, dec = estimate([]), R.not_testable(why)
    out.append(
        make_finding(
            section,
            "The unit Jacobians have high rank: no low-rank structure (Sec. 3.2, Fig. 1 top).",
            f"per image: smallest non-zero fraction (rank / n) over units {', '.join(have_early) or '-'}; "
            "median",
            dec,
            est,
            images=imgs5,
            measured=f"{est.text('.3g', 100, '%')} of the values non-zero; zeros per unit: "
            f"{per_stage('frac_zero')}",
        )
    )
    # S3b: the exception of ResNet-56's third stage
    claim = (
        "Exception: the third-stage unit of ResNet-56 has lower rank than the units of stages 1-2 (Sec. 3.2)."
    )
    stat = (
        "per image: rank fraction of the last stage's fifth unit minus the smallest of stages 1..L-1; median"
    )
    is56 = len(net.units) == 27 and nst == 3
    last_addr = f"{nst}.{min(5, len(net.stages[-1]))}"
    if not is56:
        out.append(
            make_finding(
                section,
                claim,
                stat,
                R.not_testable(
                    f"the paper states it for ResNet-56 only; {net.name} has {len(net.units)} units"
                ),
                images=imgs5,
            )
        )
    elif last_addr not in fifth_addr or not have_early:
        out.append(
            make_finding(
                section, claim, stat, R.not_testable("needs the fifth units of every stage"), images=imgs5
            )
        )
    else:
        v = np.array(
            [
                (1 - float(next(r for r in rows if r["address"] == last_addr)["frac_zero"]))
                - min(1 - float(r["frac_zero"]) for r in rows if int(r["stage"]) in early)
                for rows in per.values()
            ]
        )
        est, test = estimate(v, seed), signed_rank(v, "less")
        out.append(
            make_finding(
                section,
                claim,
                stat,
                R.directional(est, test, "less", "the rank difference"),
                est,
                test,
                test_what="rank difference < 0",
                images=imgs5,
                measured=est.text(".3g", 100, " points"),
            )
        )
    out.append(_dependence_finding(section, ctx, dep, dep_unit, dep_seeds, seed, variant_unit(ctx, net)[1]))
    out.extend(_scree_findings(section, ctx, net, scree, n_scree, seed))
    out.extend(_trend_findings(section, net, fig2, fig2_source, seed))
    return out


def _model_finding(ctx: ReportContext, nets, deps) -> tuple[Finding, list[dict]]:
    """Two networks: their spectra of corresponding units differ no more than an architecture
    change moves them (the unit of Figure 5 of each network, at the same images).
    """
    (dep_a, unit_a), (dep_b, unit_b) = deps
    a, b = nets
    claim = (
        "There is no significant difference between the spectra of ResNet-56 and ResNet-110 (Sec. 3.2; "
        f"tested on the two models of this report, {a.name} and {b.name})."
    )
    stat = (
        f"per image: relative L2 distance between the sorted spectra of unit {unit_a or '-'} of {a.name} and "
        f"unit {unit_b or '-'} of {b.name} / the distance caused by alpha 1 -> {ALPHA_STEP:g} or t 1 -> "
        f"{T_STEP:g} on the same unit (mean of the two models); median over images"
    )
    section = "Spectra (two models)"
    ua, ub = ablation_unit(a), ablation_unit(b)
    k = min(len(dep_a), len(dep_b))
    if ua is None or ub is None or (ua.in_shape, ua.out_shape) != (ub.in_shape, ub.out_shape):
        why = "the two models have no corresponding regular unit of the same shape in their last stage"
        return make_finding(section, claim, stat, R.not_testable(why)), []
    if k < 2:
        return make_finding(section, claim, stat, R.not_testable("needs at least 2 images")), []
    tr_a, tr_b = ([r["trained"] for r in dep[:k]] for dep in (dep_a, dep_b))
    rows = model_vs_architecture(tr_a, tr_b, dep_a[:k], dep_b[:k])
    for r, image_id in zip(rows, ctx.image_ids[:k], strict=True):
        r["image"] = image_id
    ratio = np.array([r["ratio"] for r in rows])
    medians = ", ".join(
        f"{k} {np.median([r[k] for r in rows]):.3g}" for k in ("d_model", "d_image", "d_arch")
    )
    finding = _below_one(
        (section, claim, stat),
        ratio,
        ratio,
        ctx.cfg.seed,
        "model",
        ctx.images_text(k),
        lambda est: f"ratio {est.text()}; medians: {medians}",
    )
    return finding, rows


def _below_one(text: tuple[str, str, str], values, paired, seed: int, what: str, images: str, measured):
    """A finding whose rule is ``directional(ratio < 1)`` on per-image distance ratios against
    the architecture distance: ``values`` are estimated (per image, or per image and seed), the
    signed-rank test runs on log ``paired`` (one ratio per image).
    """
    est = estimate(values, seed)
    test = signed_rank(paired, "less", 1.0, log=True)
    dec = R.directional(est, test, "less", f"the ratio ({what} distance / architecture distance)", null=1.0)
    return make_finding(
        *text,
        dec,
        est,
        test,
        test_what=f"log(d_{what} / d_arch) < 0, paired per image",
        images=images,
        measured=measured(est),
    )


def _dependence_finding(
    section: str, ctx: ReportContext, dep, unit: str, n_seeds: int, seed: int, why_not: str = ""
) -> Finding:
    claim = (
        "The spectra differ only slightly between images, in contrast with changes of the unit's "
        "architecture "
        "or weights (abstract, Sec. 3.2, 3.4, 4)."
    )
    stat = (
        f"per image (unit {unit or '-'}): median distance of its sorted spectrum to the other images' / "
        "distance "
        f"to the same unit with alpha 1 -> {ALPHA_STEP:g} or t 1 -> {T_STEP:g} (the smaller; {n_seeds} noise "
        "seeds); relative L2 distance; median over images"
    )
    if len(dep) < 2:
        return make_finding(section, claim, stat, R.not_testable(why_not or "needs at least 2 images"))
    d_img = np.array([r["d_image"] for r in dep])
    d_arch = np.array([r["d_arch"] for r in dep])
    return _below_one(
        (section, claim, stat),
        np.array([r["ratio"] for r in dep]),
        d_img / d_arch,
        seed,
        "image",
        ctx.images_text(len(dep)),
        lambda est: (
            f"ratio {est.text()}; d_image median {np.median(d_img):.3g}, d(alpha {ALPHA_STEP:g}) "
            f"{np.median([r['d_alpha'] for r in dep]):.3g}, d(t {T_STEP:g}) "
            f"{np.median([r['d_t_mean'] for r in dep]):.3g}"
        ),
    )


def _downsampling_finding(section: str, net, panels: list[dict], n_img: int, imgs: str, seed: int) -> Finding:
    """S5a: no plateau in the first (down-sampling) units of stages 2..L (``panels`` of ``net``'s
    first units, at ``n_img`` images); only units that do down-sample (or project) count, and
    panels with band fractions: exact, or estimates (their intervals' upper ends).
    """
    first = [p for p in panels if p["stage"] > 1 and net.unit(p["stage"], 1).kind == "downsampling"]
    later = [p for p in first if "frac" in p]
    claim = (
        "The first (down-sampling) units of stages 2 and 3 have no significant portion of values near 1 "
        "(Sec. 3.2, Fig. 1 middle)."
    )
    stat = "per image: largest fraction of values in [0.99, 1.01] over the first units of stages 2..L; median"
    if later:
        v = np.array([max(_frac(p, i) for p in later) for i in range(n_img)])
        est = estimate(v, seed)
        dec = R.level_below(est, R.PLATEAU_MIN)
        measured = (
            est.text(".3g", 100, "%")
            + "; "
            + ", ".join(
                f"{p['label']}: {100 * np.median([_frac(p, i) for i in range(n_img)]):.2f}%" for p in later
            )
        )
    else:
        why = (
            "needs whole spectra of the first units (run without --quick)"
            if first
            else f"{net.name} has no down-sampling units after stage 1 (the first units of its "
            "later stages keep the spatial size)"
        )
        est, dec, measured = estimate([]), R.not_testable(why), ""
    return make_finding(section, claim, stat, dec, est, images=imgs, measured=measured)


def _scree_findings(
    section: str, ctx: ReportContext, net, scree: dict, n_scree: int, seed: int
) -> list[Finding]:
    out = []
    rows = scree["rows"]
    imgs = ctx.images_text(n_scree)
    n_img = len(rows["unit"][0]["spectra"]) if rows["unit"] else 0
    ds = rows["downsampling"]
    unit = rows["unit"]
    out.append(_downsampling_finding(section, net, ds, n_img, imgs, seed))
    # S5b: stage 1's first unit: plateau less pronounced than its fifth unit
    claim = (
        "The first unit of stage 1 still has many values around 1, but its plateau is less pronounced than "
        "the regular units' (Fig. 1 middle)."
    )
    stat = "per image: fraction in [0.99, 1.01] of unit 1.1 minus that of the fifth unit of stage 1; median"
    p1, p5 = ds[0], unit[0]
    if p1.get("address") == p5.get("address"):
        dec, est, test = R.not_testable("stage 1 has a single unit"), estimate([]), None
    elif not ("frac" in p1 and "frac" in p5):
        dec, est, test = (
            R.not_testable("needs band fractions of the stage-1 units (run without --quick)"),
            estimate([]),
            None,
        )
    else:  # conservative with estimates: upper end of unit 1.1 minus lower end of the fifth unit
        v = np.array([_frac(p1, i, 1) - _frac(p5, i, 0) for i in range(n_img)])
        est, test = estimate(v, seed), signed_rank(v, "less")
        dec = R.directional(est, test, "less", "the difference")
    out.append(
        make_finding(
            section,
            claim,
            stat,
            dec,
            est,
            test,
            test_what="difference < 0",
            images=imgs,
            measured=est.text(".3g", 100, " points") if est.n else "",
        )
    )
    # S6: mean singular value 1
    claim = (
        "The singular values of the unit Jacobians have a mean of 1 (fifth units and the first unit of stage "
        "1; Sec. 3.2, Fig. 1)."
    )
    stat = "per image: largest |mean singular value - 1| over the fifth units and unit 1.1; median"
    panels = unit + [ds[0]]
    if all(_whole(p, i) for p in panels for i in range(n_img)) and n_img:
        v = np.array([max(abs(float(np.mean(p["spectra"][i])) - 1) for p in panels) for i in range(n_img)])
        est = estimate(v, seed)
        dec = R.level_below(est, R.MEAN_ONE_TOL, pct=False)
        measured = (
            est.text()
            + "; means: "
            + ", ".join(f"{p['label']}: {np.median([np.mean(s) for s in p['spectra']]):.3g}" for p in panels)
        )
    else:
        est, dec, measured = estimate([]), R.not_testable("needs whole spectra (run without --quick)"), ""
    out.append(make_finding(section, claim, stat, dec, est, images=imgs, measured=measured))
    # S7: stages: no plateau, a few very large values
    st = rows.get("stage", [])
    claim = (
        "The stage Jacobians have no plateau and a small number of very large singular values (Fig. 1 "
        "bottom)."
    )
    if st and unit:
        ratio = np.array(
            [
                min(
                    float(np.asarray(p["spectra"][i])[0]) / float(np.asarray(u["spectra"][i])[0])
                    for p, u in zip(st, unit, strict=False)
                )
                for i in range(n_img)
            ]
        )
        e_big = estimate(ratio, seed)
        t_big = signed_rank(ratio, "greater", 1.0, log=True)
        big = R.directional(e_big, t_big, "greater", "sigma_max(stage) / sigma_max(its fifth unit)", null=1.0)
        whole = [p for p in st if all(_whole(p, i) for i in range(n_img))]
        if whole:
            pl = np.array([max(_frac(p, i) for p in whole) for i in range(n_img)])
            pl_low = np.array([max(_frac(p, i, 0) for p in whole) for i in range(n_img)])
            e_pl = estimate(pl, seed)
            flat = R.level_below(e_pl, R.PLATEAU_MIN)
            dec = R.all_of([flat, big])
            pl_text = (
                f"plateau share (stages {', '.join(str(p['stage']) for p in whole)}; upper end of the range "
                f"the values' error bounds allow, {100 * np.median(pl_low):.3g}% at the lower end) "
                f"{e_pl.text('.3g', 100, '%')}"
            )
        else:
            k_min = min(len(sv) for p in st for sv in p["spectra"])
            pl_text = f"plateau not assessed (top-{k_min} values only; run without --quick)"
            dec = R.Decision(
                R.PARTLY if big.verdict == R.REPRODUCED else big.verdict,
                big.rule + "; the plateau part needs whole stage spectra: at best partly without them",
                big.why + "; " + pl_text,
            )
        out.append(
            make_finding(
                section,
                claim,
                "per image: smallest ratio sigma_max(stage) / sigma_max(fifth unit of "
                "the stage) over the stages, and the largest plateau share of a stage; median",
                dec,
                e_big,
                t_big,
                test_what="log ratio > 0",
                images=imgs,
                measured=f"sigma_max ratio {e_big.text()}; {pl_text}",
            )
        )
    return out


TRENDS = (
    # (claim, band, stages ("early" | "last" | "all"), direction, magnitude)
    (
        "The number of singular values greater than 1 decreases slightly through the network (Fig. 2, first "
        "bullet).",
        "above",
        "all",
        "less",
        None,
    ),
    (
        "The number of singular values at 1 increases throughout the first two stages (Fig. 2, second "
        "bullet).",
        "plateau",
        "early",
        "greater",
        None,
    ),
    (
        "The number of singular values at 1 decreases drastically in the third stage: the plateau loses its "
        "width "
        "(Fig. 2, second bullet; Sec. 3.2).",
        "plateau",
        "last",
        "less",
        R.DRASTIC,
    ),
    (
        "The number of singular values at 0 decreases slightly during the first two stages: the ranks grow "
        "(Fig. 2, "
        "third bullet).",
        "zero",
        "early",
        "less",
        None,
    ),
    (
        "The number of non-zero singular values decreases steeply in the third stage: the ranks fall (Fig. "
        "2, third "
        "bullet).",
        "zero",
        "last",
        "greater",
        None,
    ),
)


def _trend_findings(section: str, net, fig2: list[dict], source: str, seed: int) -> list[Finding]:
    out = []
    per = by_image(fig2)
    nst = len(net.stages)
    for claim, band, where, direction, magnitude in TRENDS:
        stages = {"early": list(range(1, nst)), "last": [nst], "all": list(range(1, nst + 1))}[where]
        stat = (
            f"per image: robust (Theil-Sen) slope of the fraction {band} against the position of the regular "
            "units "
            + (
                "through the network"
                if where == "all"
                else f"within stage(s) {', '.join(map(str, stages))} (mean)"
            )
            + " scaled to [0, 1] (= fitted change first -> last unit); median over images"
        )
        first = next(iter(per.values()), [])
        short = [s for s in stages if len(regular_units(first, s)) < R.MIN_TREND_UNITS]
        missing = [s for s in stages if not regular_units(first, s)]
        if not per:
            dec, est, test, measured = R.not_testable("no band rows"), estimate([]), None, ""
        elif where != "all" and nst < 2:  # stages 1..L-1 and L would be one and the same stage
            dec = R.not_testable(f"{net.name} has one stage: the paper's early stages and last one coincide")
            est, test, measured = estimate([]), None, ""
        elif where == "all" and missing:
            dec = R.not_testable(
                f"no band counts of the units of stage(s) {', '.join(map(str, missing))} in this run"
            )
            est, test, measured = estimate([]), None, ""
        elif where != "all" and short:
            dec = R.not_testable(
                f"stage(s) {', '.join(map(str, short))} of {net.name} have fewer than {R.MIN_TREND_UNITS} "
                "regular units"
            )
            est, test, measured = estimate([]), None, ""
        else:
            slopes, rels = [], []
            for rows in per.values():
                if where == "all":
                    t = network_trend(rows, band)
                    slopes.append(t["slope"])
                    rels.append(t["relative_change"])
                else:
                    ts = [stage_trend(rows, band, s) for s in stages]
                    slopes.append(float(np.mean([t["slope"] for t in ts])))
                    rels.append(float(np.mean([t["relative_change"] for t in ts])))
            est, test = estimate(slopes, seed), signed_rank(slopes, direction)
            rel = estimate(rels, seed)
            dec = R.trend(est, test, direction, rel, magnitude)
            measured = (
                f"fitted change {est.text('.3g', 100, ' points')}; relative change "
                f"{rel.text('.3g', 100, '%')}"
            )
        out.append(
            make_finding(
                section,
                claim,
                stat,
                dec,
                est,
                test,
                test_what=f"slope {'<' if direction == 'less' else '>'} 0",
                images=source,
                measured=measured,
            )
        )
    return out
