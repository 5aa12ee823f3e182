"""Report section: Figure 5 (skip scaling and weight interpolation) and its findings.

The unit is the first regular unit of the last stage (:func:`~linstab.report.variants.ablation_unit`).
Figure 5 shows the spectra at the first image (noise seed ``cfg.seed``). The findings use band
counts around the plateau value (exact, by inertia) of the first 5 images (quick: the first),
with ``cfg.n_seeds`` noise seeds for the weight interpolation, and the exactly-1 counts of the
structure for the plateau questions. The norm-preserving interpolation (every interpolated
tensor rescaled to ``||theta||``) is the control that tells interpolation from shrinking.
"""

from __future__ import annotations

import math

import numpy as np

from ..analyses.ablations import Variant
from ..analyses.image_dependence import spectrum_distance
from ..plots.ablations import plot_ablations
from . import rules as R
from .context import Finding, ReportContext, Section
from .findings import estimate, make_finding, signed_rank
from .variants import ALPHA_STEP, dependence_images, prefetch_variants, variant_cached, variant_unit

ALPHAS = ((0.5, 0.75, 1.0, 1.25, 1.5), (0.5, 1.0, 1.5))
"""Skip scales (full, quick)."""
TS = ((0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 0.5, 1.0))
"""Interpolation weights (full, quick)."""
N_ABLATION = (5, 2)
"""Images of the ablation findings (full, quick)."""


def section_ablations(ctx: ReportContext, net, images) -> Section:
    """Figure 5: skip scaling and weight interpolation on one regular unit, with findings."""
    sec = Section("Skip scaling and weight interpolation (Figure 5)")
    u, why = variant_unit(ctx, net)
    if u is None:
        sec.text.append(f"Ablations left out: {why}.")
        ctx.findings.append(
            make_finding(
                "Ablations",
                "Figure 5 (every claim of Sec. 3.4-3.5: skip scaling and weight interpolation)",
                "whole spectra of the last stage's first regular unit at several skip scales and weights",
                R.not_testable(why),
            )
        )
        return sec
    q = 1 if ctx.cfg.quick else 0
    alphas, ts = ALPHAS[q], TS[q]
    seeds = [ctx.cfg.seed + s for s in range(ctx.cfg.n_seeds)]
    ids = ctx.image_ids
    x0 = images[0]
    # Figure 5: spectra at the first image, noise seed cfg.seed
    a_pts = [variant_cached(ctx, net, x0, u, Variant("alpha", a), spectrum_values=True) for a in alphas]
    t_pts = [variant_cached(ctx, net, x0, u, Variant("t", t, seeds[0]), spectrum_values=True) for t in ts]
    paths = plot_ablations(
        a_pts, t_pts, ctx.fig_dir / "figure5_ablations", title=f"{net.name}, unit {u.address}, image {ids[0]}"
    )
    sec.figures.append(ctx.rel(paths[0]))
    fig_rows = []
    for p in a_pts + t_pts:
        fig_rows.append(
            {
                "parameter": p.parameter,
                "value": p.value,
                "image": ids[0],
                "seed": p.extra.get("seed", 0),
                "n": len(p.singular_values),
                "plateau_value": p.plateau_value,
                "n_within_1pct_of_plateau": p.bands["plateau"],
                **{f"band {k}": v for k, v in p.bands.items()},
            }
        )
    sec.data.append(
        ctx.write_npz(
            "ablations.npz",
            **{f"alpha_{p.value:g}": p.singular_values for p in a_pts},
            **{f"t_{p.value:g}": p.singular_values for p in t_pts},
        )
    )
    # the findings' counts: band counts around the plateau at several images and seeds
    k = min(N_ABLATION[q], images.shape[0])
    rows = []
    todo = [(i, Variant("alpha", a)) for i in range(k) for a in alphas]
    todo += [(i, Variant(p, t, s)) for i in range(k) for t in ts for s in seeds for p in ("t", "t-norm")]
    prefetch_variants(ctx, net, [(images[i], u, v, False) for i, v in todo], f"ablation counts {net.name}")
    memo: dict = {}
    for i, v in ctx.progress(todo, f"ablation counts {net.name}"):
        key = (i, v.canonical())
        if key not in memo:
            memo[key] = variant_cached(ctx, net, images[i], u, v)
        p = memo[key]
        n = int(p.extra["n"])
        rows.append(
            {
                "image": ids[i],
                "parameter": v.parameter,
                "value": v.value,
                "seed": v.seed if v.parameter != "alpha" else "",
                "n": n,
                "plateau_value": p.plateau_value,
                "width": p.bands["plateau"],
                "exact": p.n_plateau_exact if p.n_plateau_exact is not None else "",
                **{f"band {b}": c for b, c in p.bands.items()},
            }
        )
    sec.data.append(ctx.write_csv("ablations.csv", rows))
    imgs = ctx.images_text(k)
    sec.tables.append((f"Unit {u.address}: plateau width and exactly-plateau counts ({imgs})", rows))
    sec.tables.append((f"Figure 5 spectra: band counts (image {ids[0]})", fig_rows))
    sec.text.append(
        f"Unit {u.address}; findings over {imgs}, interpolation noise seeds {seeds}. Width: values within 1% "
        "of the "
        "plateau value (|alpha| or 1), exact: values equal to it by structure (m - 2r)."
    )
    ctx.findings.extend(_findings(ctx, rows, ids[:k], alphas, ts, seeds, u.address, images, net))
    return sec


def _get(rows, image, parameter, value, seed=None, key="width") -> float:
    for r in rows:
        if r["image"] == image and r["parameter"] == parameter and r["value"] == value:
            if seed is None or r["seed"] == seed or parameter == "alpha":
                v = r[key]
                return float(v) / r["n"] if v != "" else math.nan
    return math.nan


def _findings(ctx, rows, ids, alphas, ts, seeds, unit, images, net) -> list[Finding]:
    section = "Ablations"
    seed = ctx.cfg.seed
    imgs = ctx.images_text(len(ids))
    out: list[Finding] = []
    # A1: the plateau moves to alpha
    others = [a for a in alphas if a != 1.0]
    trained = np.array([_get(rows, i, "alpha", 1.0) for i in ids])
    at_alpha = np.array([min(_get(rows, i, "alpha", a) for a in others) for i in ids])
    ratio = np.array(
        [
            min(_get(rows, i, "alpha", a) / t if t > 0 else math.nan for a in others)
            for i, t in zip(ids, trained, strict=True)
        ]
    )
    e_ratio, e_at, e_tr = estimate(ratio, seed), estimate(at_alpha, seed), estimate(trained, seed)
    out.append(
        make_finding(
            section,
            "Scaling the skip connection by alpha moves the plateau of the spectrum to alpha (Sec. 3.4.1, "
            "Fig. 5).",
            f"per image (unit {unit}): smallest over alpha in {others} of the plateau width at alpha (values "
            "within "
            "1% of alpha) / the width at alpha = 1; median",
            R.plateau_moves(e_ratio, e_at, e_tr),
            e_ratio,
            images=imgs,
            measured=f"width ratio {e_ratio.text()}; width at 1: {e_tr.text('.3g', 100, '%')}, smallest at "
            "alpha: "
            f"{e_at.text('.3g', 100, '%')}",
        )
    )
    # A2: the whole spectrum is not simply scaled by alpha (against the image-to-image distance)
    claim = "Scaling the skip by alpha does not scale the entire spectrum by alpha (Fig. 5 caption)."
    stat = (
        f"per image (unit {unit}): log(distance of the spectrum at alpha = {ALPHA_STEP:g} from "
        f"{ALPHA_STEP:g} x "
        "the trained spectrum / median distance of the trained spectrum to the other images'); median"
    )
    k = dependence_images(ctx, images.shape[0])
    if k < 2:
        out.append(make_finding(section, claim, stat, R.not_testable("needs at least 2 images"), images=imgs))
    else:
        u = _unit(net, unit)
        tr = [
            variant_cached(ctx, net, images[i], u, Variant("none", 1.0), spectrum_values=True).singular_values
            for i in range(k)
        ]
        sc = [
            variant_cached(
                ctx, net, images[i], u, Variant("alpha", ALPHA_STEP), spectrum_values=True
            ).singular_values
            for i in range(k)
        ]
        d_scale = np.array(
            [spectrum_distance(b, ALPHA_STEP * np.asarray(a)) for a, b in zip(tr, sc, strict=True)]
        )
        d_img = np.array(
            [np.median([spectrum_distance(tr[i], tr[j]) for j in range(k) if j != i]) for i in range(k)]
        )
        v = np.log(d_scale) - np.log(d_img)
        est, test = estimate(v, seed), signed_rank(v, "greater")
        out.append(
            make_finding(
                section,
                claim,
                stat,
                R.directional(est, test, "greater", "the log ratio"),
                est,
                test,
                test_what="log ratio > 0",
                images=ctx.images_text(k),
                measured=f"d(scaled) median {np.median(d_scale):.3g} vs d(images) {np.median(d_img):.3g}",
            )
        )
    # A3-A5: weight interpolation, exactly-1 counts
    t_mid = 0.5

    def exact(i, param, t, s):
        return _get(rows, i, "t" if t in (0.0, 1.0) else param, t, s, key="exact")

    ex = {t: np.array([[exact(i, "t", t, s) for s in seeds] for i in ids]) for t in ts}
    exn = {t: np.array([[exact(i, "t-norm", t, s) for s in seeds] for i in ids]) for t in ts}
    counts = ", ".join(f"t={t:g}: {100 * np.nanmedian(ex[t]):.2f}%" for t in ts)
    counts_n = ", ".join(f"t={t:g}: {100 * np.nanmedian(exn[t]):.2f}%" for t in ts)
    est = estimate(ex[0.0], seed)
    out.append(
        make_finding(
            section,
            "Weight interpolation: for pure noise (t = 0) the plateau at 1 is absent (Sec. 3.5, Fig. 5 "
            "right).",
            f"per image and noise seed (unit {unit}): fraction of singular values exactly 1 (structure, m - "
            "2r) at "
            "t = 0; median",
            R.level_below(est, R.ABSENT),
            est,
            images=imgs,
            measured=f"{est.text('.3g', 100, '%')}; exactly 1 per t: {counts}",
        )
    )
    claim = (
        "Weight interpolation: the plateau takes shape as t grows, is widest at t = 0.5 and loses width "
        "after "
        "(Sec. 3.5, Fig. 5 right)."
    )
    stat = (
        "per image and seed: exactly-1 fraction at t = 0.5 minus that at t = 0, and minus that at t = 1; "
        "median of the second (the interval and the CSV value)"
    )
    if t_mid not in ts:
        out.append(make_finding(section, claim, stat, R.not_testable("t = 0.5 not on the grid"), images=imgs))
        return out

    def peak(exs):
        rise = exs[t_mid] - exs[0.0]
        fall = exs[t_mid] - exs[1.0]
        e_r, t_r = estimate(rise, seed), signed_rank(rise, "greater")
        e_f, t_f = estimate(fall, seed), signed_rank(fall, "greater")
        grid = np.stack([exs[t] for t in ts], axis=-1)
        ok = np.isfinite(grid).all(axis=-1)
        share = float(np.mean(np.argmax(grid[ok], axis=-1) == ts.index(t_mid))) if ok.any() else math.nan
        dec = R.interior_maximum(
            R.directional(e_r, t_r, "greater", "the rise from t = 0"),
            R.directional(e_f, t_f, "greater", "the excess over t = 1"),
            share,
            t_mid,
        )
        return dec, e_f, t_f, e_r, share

    dec, e_f, t_f, e_r, share = peak(ex)
    out.append(
        make_finding(
            section,
            claim,
            stat,
            dec,
            e_f,
            t_f,
            test_what="width(0.5) - width(1) > 0",
            images=imgs,
            measured=f"t=0.5 minus t=1: {e_f.text('.3g', 100, ' points')}; minus t=0: "
            f"{e_r.text('.3g', 100, ' points')}; widest at 0.5 in {100 * share:.0f}%; {counts}",
        )
    )
    claim = (
        "Control: the plateau maximum at t = 0.5 comes from the interpolation, not from the shorter weights "
        "(||theta(0.5)|| ~ 0.71 ||theta||): it persists when every interpolated tensor keeps the norm of "
        "theta."
    )
    dec_n, e_fn, t_fn, e_rn, share_n = peak(exn)
    out.append(
        make_finding(
            section,
            claim,
            stat + " (norm-preserving interpolation)",
            dec_n,
            e_fn,
            t_fn,
            test_what="width(0.5) - width(1) > 0",
            images=imgs,
            measured=f"t=0.5 minus t=1: {e_fn.text('.3g', 100, ' points')}; minus t=0: "
            f"{e_rn.text('.3g', 100, ' points')}; widest at 0.5 in {100 * share_n:.0f}%; "
            f"{counts_n}",
        )
    )
    return out


def _unit(net, address: str):
    s, k = (int(v) for v in address.split("."))
    return net.unit(s, k)
