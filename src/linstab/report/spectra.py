"""Report section: Figures 1 and 2 (scree plots, band fractions) and their findings."""

from __future__ import annotations

import numpy as np

from ..analyses.network_spectra import QUICK_EXACT_MAX, QUICK_TOPK, scree_data, scree_quick, unit_bands
from ..io.cache import tensor_hash
from ..plots.spectra import plot_bands, plot_scree
from .context import Finding, ReportContext, Section


def _scree_cached(ctx: ReportContext, net, images) -> dict:
    """``spectra.scree_data`` through the cache (arrays per panel and image)."""
    quick = ctx.cfg.quick
    parts = {
        "model": net.sha256 or net.name,
        "images": tensor_hash(images),
        "what": "scree",
        "stage_method": "topk" if quick else "auto",
        "quick_rule": f"units exact <= {QUICK_EXACT_MAX}, others top-{QUICK_TOPK}" if quick else None,
        "dtype": "float64",
    }

    def compute():
        if quick:
            d = scree_quick(net, images, progress=ctx.cfg.progress)
        else:
            d = scree_data(net, images, stage_method="auto", stage_k=256, progress=ctx.cfg.progress)
        arrays, meta = {}, {"model": d["model"], "images": d["images"], "rows": {}}
        for key, panels in d["rows"].items():
            meta["rows"][key] = []
            for j, p in enumerate(panels):
                for i, sv in enumerate(p["spectra"]):
                    arrays[f"{key}|{j}|{i}"] = sv
                meta["rows"][key].append({k: v for k, v in p.items() if k != "spectra"})
        return arrays, meta

    arrays, meta = ctx.cache.get_or_compute("scree", parts, compute)
    rows = {}
    for key, panels in meta["rows"].items():
        rows[key] = []
        for j, p in enumerate(panels):
            n_img = len(meta["images"])
            rows[key].append({**p, "spectra": [arrays[f"{key}|{j}|{i}"] for i in range(n_img)]})
    return {"model": meta["model"], "images": meta["images"], "rows": rows}


IMAGE_DEPENDENCE_TOL = 0.1  # "spectra differ only slightly": sorted spectra within 10% (rel. L2)


def _bands_cached(ctx: ReportContext, net, image) -> list[dict]:
    parts = {
        "model": net.sha256 or net.name,
        "image": tensor_hash(image),
        "what": "bands",
        "thresholds": [0.99, 1.01],
        "zero_tol": 1e-6,
    }

    units = None
    if ctx.cfg.quick:  # quick mode: the units with at most 2 * QUICK_EXACT_MAX values
        units = [u.address for u in net.units if u.n_out <= 2 * QUICK_EXACT_MAX]
    parts["units"] = units

    def compute():
        rows = unit_bands(net, image, units=units, progress=ctx.cfg.progress)
        return {}, {
            "rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows]
        }

    return ctx.cache.get_or_compute("bands", parts, compute)[1]["rows"]


def section_spectra(ctx: ReportContext, nets, images) -> Section:
    """Figures 1 and 2: scree plots and band fractions of every unit, with findings."""
    sec = Section("Spectra of unit and stage Jacobians (Figures 1 and 2)")
    n_scree = 2 if ctx.cfg.quick else min(5, images.shape[0])
    screes = [_scree_cached(ctx, net, images[:n_scree]) for net in nets]
    paths = plot_scree(screes if len(screes) > 1 else screes[0], ctx.fig_dir / "figure1_scree")
    sec.figures.append(ctx.rel(paths[0]))
    arrays = {}
    for d in screes:
        for key, panels in d["rows"].items():
            for p in panels:
                for i, sv in enumerate(p["spectra"]):
                    arrays[f"{d['model']}|{key}|{p['label']}|image{d['images'][i]}"] = sv
    sec.data.append(ctx.write_npz("figure1_spectra.npz", **arrays))
    net = nets[0]
    d = screes[0]
    # image dependence: spread of the unit spectra across images
    spread_rows = []
    for p in d["rows"]["unit"] + d["rows"]["downsampling"]:
        S = np.stack([np.asarray(sv)[: min(len(x) for x in p["spectra"])] for sv in p["spectra"]])
        # image dependence: largest relative L2 distance of one image's spectrum from the mean
        mean = S.mean(0)
        rel = float(max(np.linalg.norm(r - mean) for r in S) / max(np.linalg.norm(mean), 1e-300))
        n = int(p.get("n", S.shape[1]))
        full = S.shape[1] == n
        near1 = [float(np.mean(np.abs(np.asarray(sv) - 1) <= 0.01)) for sv in p["spectra"]]
        spread_rows.append(
            {
                "panel": p["label"],
                "address": p.get("address", ""),
                "n": n,
                "values_computed": S.shape[1],
                "images": len(S),
                "max_rel_L2_diff_across_images": rel,
                "mean_fraction_in_[0.99,1.01]": float(np.mean(near1)) if full else None,
                "sigma_max (mean)": float(S[:, 0].mean()),
                "exact_ones (image 0)": p.get("exact_ones", [None])[0],
            }
        )
    sec.tables.append(("Figure 1 panels: plateau and image dependence", spread_rows))
    sec.data.append(ctx.write_csv("figure1_panels.csv", spread_rows))
    band_rows = [r for n_ in nets for r in _bands_cached(ctx, n_, images[0])]
    if ctx.cfg.quick:
        sec.text.append(
            f"Quick mode: exact spectra for units with at most {QUICK_EXACT_MAX} singular values, "
            f"the {QUICK_TOPK} largest for larger units and for the stages; band counts for units "
            f"with at most {2 * QUICK_EXACT_MAX} values."
        )
    paths = plot_bands(band_rows, ctx.fig_dir / "figure2_bands")
    sec.figures.append(ctx.rel(paths[0]))
    sec.data.append(ctx.write_csv("figure2_bands.csv", band_rows))
    main_rows = [r for r in band_rows if r["model"] == net.name]
    show = [
        {
            k: r[k]
            for k in (
                "address",
                "kind",
                "n",
                "above",
                "plateau",
                "below",
                "zero",
                "exact_ones",
                "frac_plateau",
            )
        }
        for r in main_rows
    ]
    sec.tables.append((f"Band counts per unit, {net.name}, image 0", show))

    regular = [p for p in spread_rows if "unit" in p["panel"] and "(" not in p["panel"]]
    band_frac = {r["address"]: r["frac_plateau"] for r in main_rows}
    plateau_frac = [
        p["mean_fraction_in_[0.99,1.01]"]
        if p["mean_fraction_in_[0.99,1.01]"] is not None
        else band_frac.get(p["address"])
        for p in regular
    ]
    plateau_frac = [f for f in plateau_frac if f is not None]
    img_dep = max(p["max_rel_L2_diff_across_images"] for p in spread_rows)
    reg_rows = [r for r in main_rows if r["kind"] == "regular"]
    ones_share = [r["exact_ones"] / r["plateau"] for r in reg_rows if r["exact_ones"] and r["plateau"]]
    mean_pl = 100 * float(np.mean(plateau_frac))
    per_stage = ", ".join(f"{100 * f:.1f}%" for f in plateau_frac)
    txt = (
        f"Fifth unit of each stage: on average {mean_pl:.1f}% of the singular values lie in "
        f"[0.99, 1.01] (per stage: {per_stage})."
    )
    if ones_share:
        share = 100 * float(np.mean(ones_share))
        txt += (
            f" Over the regular units at image 0, {share:.1f}% of the plateau values are exactly 1 "
            "by structure (rank bound m - 2r); the rest lie near 1."
        )
    sec.text.append(txt)
    sec.text.append(
        f"Across the {n_scree} images the unit spectra differ by at most {100 * img_dep:.2f}% "
        "(largest relative L2 distance of one image's sorted spectrum from the mean over images)."
    )
    stage_frac = {}
    for r in main_rows:
        stage_frac.setdefault(r["stage"], []).append(r)
    trend = []
    for st, rs in sorted(stage_frac.items()):
        rs = [r for r in rs if r["kind"] == "regular"]
        if len(rs) >= 2:
            trend.append(
                (st, rs[0]["frac_plateau"], rs[-1]["frac_plateau"], rs[0]["frac_zero"], rs[-1]["frac_zero"])
            )
    sec.text.append(
        "Through each stage (first to last regular unit): "
        + "; ".join(
            f"stage {st}: plateau {100 * a:.1f}% -> {100 * b:.1f}%, zeros {100 * c:.1f}% -> {100 * e:.1f}%"
            for st, a, b, c, e in trend
        )
        + "."
    )
    ok_plateau = bool(plateau_frac) and float(np.mean(plateau_frac)) > 0.3
    ctx.findings.append(
        Finding(
            "Spectra",
            "Most singular values of (regular) unit Jacobians are 1: a plateau in the scree plot.",
            f"{100 * float(np.mean(plateau_frac)):.1f}% in [0.99, 1.01] for the fifth units",
            "reproduced"
            if float(np.mean(plateau_frac)) > 0.5
            else ("partly" if ok_plateau else "not reproduced"),
        )
    )
    ctx.findings.append(
        Finding(
            "Spectra",
            "Spectra differ only slightly between images.",
            f"max relative L2 deviation {100 * img_dep:.2f}% over {n_scree} images (verdict threshold "
            f"{100 * IMAGE_DEPENDENCE_TOL:.0f}%)",
            "reproduced" if img_dep < IMAGE_DEPENDENCE_TOL else "not reproduced",
        )
    )
    if len(trend) >= 3:
        last = trend[-1]
        ctx.findings.append(
            Finding(
                "Spectra",
                "In the third stage the plateau shrinks and zeros grow along the stage.",
                f"stage {last[0]}: plateau {100 * last[1]:.1f}% -> {100 * last[2]:.1f}%, zeros "
                f"{100 * last[3]:.1f}% -> {100 * last[4]:.1f}%",
                "reproduced" if (last[2] < last[1] and last[4] > last[3]) else "not reproduced",
            )
        )
    stage_panels = d["rows"].get("stage", [])
    if stage_panels:
        fr = [
            float(np.mean([np.mean(np.abs(np.asarray(sv) - 1) <= 0.01) for sv in p["spectra"]]))
            for p in stage_panels
        ]
        top = [float(np.mean([np.asarray(sv)[0] for sv in p["spectra"]])) for p in stage_panels]
        sec.text.append(
            "Stage operators: "
            + ", ".join(
                f"stage {i + 1}: sigma_max {t:.3g}, {100 * f:.1f}% of computed values in [0.99, 1.01]"
                for i, (t, f) in enumerate(zip(top, fr, strict=True))
            )
            + (" (top-k values only in quick mode)." if ctx.cfg.quick else ".")
        )
        full = [
            i
            for i, p in enumerate(stage_panels)
            if all(len(sv) == int(p.get("n", len(sv))) for sv in p["spectra"])
        ]
        if full:  # the plateau share is known for the stages whose whole spectrum was computed
            fr_full = max(fr[i] for i in full)
            measured = f"largest sigma_max {max(top):.3g}; plateau share <= {100 * fr_full:.1f}%"
            if len(full) < len(stage_panels):
                measured += f" (whole spectra of stages {', '.join(str(i + 1) for i in full)})"
            verdict = "reproduced" if fr_full < 0.2 and max(top) > 2 else "not reproduced"
        else:  # top-k values only: the plateau share of the whole spectrum is not known
            k_min = min(len(sv) for p in stage_panels for sv in p["spectra"])
            measured = (
                f"largest sigma_max {max(top):.3g}; plateau not assessed (top-{k_min} values only, "
                "run without --quick)"
            )
            verdict = "partly" if max(top) > 2 else "not reproduced"
        ctx.findings.append(
            Finding(
                "Spectra",
                "Stage Jacobians have no plateau and a few very large singular values.",
                measured,
                verdict,
            )
        )
    return sec
