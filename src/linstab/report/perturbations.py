"""Report section: Figures 3 and 4 (propagated perturbations, projections) and their findings."""

from __future__ import annotations

import numpy as np

from ..analyses.perturbations import analyze
from ..analyses.propagation import default_projection_units
from ..io.cache import tensor_hash
from ..plots import save_figure
from ..plots.perturbations import projections_figure, propagation_figure
from .context import Finding, ReportContext, Section, fmt


def _propagation_cached(ctx: ReportContext, net, images, labels):
    stage = len(net.stages)
    proj_units = [f"{stage}.{k}" for k in default_projection_units(net, stage)]
    perts = list(ctx.cfg.attacks) + ["random"]
    k = 32 if ctx.cfg.quick else 64
    parts = {
        "model": net.sha256 or net.name,
        "images": tensor_hash(images),
        "what": "propagation",
        "perturbations": perts,
        "k": k,
        "seed": ctx.cfg.seed,
        "units": proj_units,
        "dtype": "float64",
    }

    def compute():
        res = analyze(
            net,
            images,
            labels,
            perts,
            k=k,
            spectral_units="last",
            keep_alphas=proj_units,
            seed=ctx.cfg.seed,
            progress=ctx.cfg.progress,
        )
        arrays = {}
        for (img, pert, addr), (a, sg) in res.alphas.items():
            arrays[f"alpha|{img}|{pert}|{addr}"] = a
            arrays[f"sigma|{img}|{pert}|{addr}"] = sg
        rows = [
            {k2: (v if not isinstance(v, np.generic) else v.item()) for k2, v in r.items()} for r in res.rows
        ]
        return arrays, {"rows": rows, "summary": res.summary(), "units": proj_units}

    arrays, meta = ctx.cache.get_or_compute("propagation", parts, compute)
    alphas = {}
    for key, a in arrays.items():
        kind, img, pert, addr = key.split("|")
        if kind == "alpha":
            alphas[(img, pert, addr)] = (a, arrays[f"sigma|{img}|{pert}|{addr}"])
    return meta["rows"], meta["summary"], alphas, meta["units"], stage


def section_propagation(ctx: ReportContext, net, images, labels) -> Section:
    """Figures 3 and 4: propagated perturbations and projections, with findings."""
    sec = Section("Propagated perturbations: random vs adversarial (Figures 3 and 4)")
    n_img = min(images.shape[0], 3 if ctx.cfg.quick else 10)
    rows, summary, alphas, units, stage = _propagation_cached(ctx, net, images[:n_img], labels[:n_img])
    perts = list(ctx.cfg.attacks) + ["random"]
    for att in ctx.cfg.attacks:
        fig = propagation_figure(rows, ["random", att], title=f"{net.name}: random (top) vs {att} (bottom)")
        paths = save_figure(fig, ctx.fig_dir / f"figure3_propagation_{att}")
        sec.figures.append(ctx.rel(paths[0]))
    main_attack = ctx.cfg.attacks[0]
    fig = projections_figure(
        rows,
        alphas,
        stage=stage,
        units=units,
        attack=main_attack,
        title=f"{net.name}: stage {stage}, {main_attack}",
    )
    paths = save_figure(fig, ctx.fig_dir / "figure4_projections")
    sec.figures.append(ctx.rel(paths[0]))
    sec.data.append(ctx.write_csv("propagation.csv", rows))
    sec.data.append(ctx.write_csv("propagation_summary.csv", summary))
    sec.tables.append(("Summary per perturbation", summary))
    by = {r.get("perturbation"): r for r in summary}
    keys = list(summary[0].keys()) if summary else []
    jump_key = "last3_vs_stage" if "last3_vs_stage" in keys else None
    align_key = "align10_last3" if "align10_last3" in keys else None
    if jump_key:
        sec.text.append(
            f"Growth at the last 3 units of stage {stage} relative to the stage mean ({jump_key}): "
            + ", ".join(f"{p}: {fmt(float(by[p][jump_key]))}" for p in perts if p in by)
            + "."
        )
    if align_key:
        sec.text.append(
            f"Alignment of the incoming perturbation with the top-10 right singular vectors ({align_key}): "
            + ", ".join(f"{p}: {fmt(float(by[p][align_key]))}" for p in perts if p in by)
            + "."
        )
    n_last = len(net.stages[-1])
    if jump_key and n_last <= 3:
        ctx.findings.append(
            Finding(
                "Perturbations",
                "Adversarial (FGSM) perturbations jump at the end of the last stage; random ones do not.",
                f"not testable: the last stage has only {n_last} units (the last 3 are the whole stage)",
                "n/a",
            )
        )
    elif jump_key and "random" in by:
        adv = [p for p in ctx.cfg.attacks if p in by]
        jumps = {p: float(by[p][jump_key]) for p in adv}
        rnd = float(by["random"][jump_key])
        bigger = [p for p in adv if jumps[p] > rnd]
        ctx.findings.append(
            Finding(
                "Perturbations",
                "Adversarial (FGSM) perturbations jump at the end of the last stage; random ones do not.",
                f"last-3/stage-mean growth: {main_attack} "
                f"{fmt(jumps.get(main_attack, float('nan')))} vs random {fmt(rnd)}",
                "reproduced" if main_attack in bigger else "not reproduced",
            )
        )
        ctx.findings.append(
            Finding(
                "Perturbations",
                "Open question: is the jump specific to the attack?",
                "; ".join(f"{p} {fmt(jumps[p])}" for p in adv) + f"; random {fmt(rnd)}",
                f"{len(bigger)} of {len(adv)} attacks exceed random",
            )
        )
    return sec
