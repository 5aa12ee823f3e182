"""Report section: Figures 3 and 4 (propagated perturbations, projections) and their findings.

Perturbations: the report's attacks (FGSM first, as in the paper), the controls of
:data:`~linstab.analyses.attacks.CONTROLS` (FGSM at half the minimal eps, which does not flip;
fixed-eps FGSM and its iterative variant BIM as in the paper's reference [7]) and random noise
of FGSM's L2 norm, repeated over ``cfg.n_seeds`` seeds. All on every image of the report
(quick: the first 3). Per-image statistics come from
:func:`~linstab.analyses.perturbations.per_image_statistics` (regular units only in every
"stage mean"; the down-sampling units are left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..analyses.attacks import ATTACK_REVISION, CONTROLS
from ..analyses.perturbations import analyze, per_image_statistics
from ..analyses.propagation import default_projection_units, random_repeat
from ..io.cache import tensor_hash
from ..plots import figure_file
from ..plots.perturbations import projections_figure, propagation_figure
from . import rules as R
from .context import Finding, ReportContext, Section, fmt
from .findings import estimate, make_finding, signed_rank

N_PROPAGATION = (None, 3)
"""Images of the propagation section (full: all, quick)."""


def perturbation_names(ctx: ReportContext) -> list[str]:
    """The report's attacks, the controls and the random repeats, in that order."""
    randoms = ["random"] + [f"random:{r}" for r in range(1, ctx.cfg.n_seeds)]
    return [*ctx.cfg.attacks, *CONTROLS, *randoms]


def _n_images(ctx: ReportContext, images) -> int:
    """How many of the report's images Figures 3-4 use (all; ``--quick``: the first few)."""
    return images.shape[0] if not ctx.cfg.quick else min(images.shape[0], N_PROPAGATION[1])


def propagation_item(
    ctx: ReportContext, net, images, labels, progress: bool | None = None
) -> tuple[str, dict, Callable]:
    """The ``(kind, parts, compute)`` cache item of a model's Figures 3-4 (attacks, controls,
    random repeats, propagation, eq. (1) projections), on the images the section uses
    (``progress``: progress bars while computing; default the report's setting).
    """
    n_img = _n_images(ctx, images)
    ids = ctx.image_ids[:n_img]
    images, labels = images[:n_img], (labels[:n_img] if labels is not None else None)
    stage = len(net.stages)
    proj_units = [f"{stage}.{k}" for k in default_projection_units(net, stage)]
    perts = perturbation_names(ctx)
    k = 32 if ctx.cfg.quick else 64
    parts = {
        "model": ctx.model_key(net),
        "images": tensor_hash(images),
        "what": "propagation",
        "attack_revision": ATTACK_REVISION,
        "perturbations": perts,
        "k": k,
        "seed": ctx.cfg.seed,
        "units": proj_units,
        "dtype": "float64",
        "ids": list(ids),
    }

    def compute():
        res = analyze(
            net,
            images,
            labels,
            perts,
            ids=ids,
            k=k,
            spectral_units="last",
            keep_alphas=proj_units,
            seed=ctx.cfg.seed,
            progress=ctx.cfg.progress if progress is None else progress,
        )
        arrays = {}
        for (img, pert, addr), (a, sg) in res.alphas.items():
            arrays[f"alpha|{img}|{pert}|{addr}"] = a
            arrays[f"sigma|{img}|{pert}|{addr}"] = sg
        rows = [
            {k2: (v if not isinstance(v, np.generic) else v.item()) for k2, v in r.items()} for r in res.rows
        ]
        return arrays, {"rows": rows, "summary": res.summary(), "units": proj_units}

    return "propagation", parts, compute


def _propagation_cached(ctx: ReportContext, net, images, labels):
    kind, parts, compute = propagation_item(ctx, net, images, labels)
    if ctx.prefetch.get("propagation") is not None:
        ctx.prefetch.pop("propagation").wait()  # the attacks started beside the spectra
    arrays, meta = ctx.cache.get_or_compute(kind, parts, compute)
    stage = len(net.stages)
    alphas = {}
    for key, a in arrays.items():
        kind, img, pert, addr = key.split("|")
        if kind == "alpha":
            alphas[(img, pert, addr)] = (a, arrays[f"sigma|{img}|{pert}|{addr}"])
    return meta["rows"], meta["summary"], alphas, meta["units"], stage


def section_propagation(ctx: ReportContext, net, images, labels) -> Section:
    """Figures 3 and 4: propagated perturbations and projections, with findings."""
    sec = Section("Propagated perturbations: random vs adversarial (Figures 3 and 4)")
    n_img = _n_images(ctx, images)
    ids = ctx.image_ids[:n_img]
    rows, summary, alphas, units, stage = _propagation_cached(ctx, net, images, labels)
    imgs = ctx.images_text(n_img)
    sec.text.append(f"Images: {imgs}; random noise repeated with {ctx.cfg.n_seeds} seeds.")
    if not any(r["perturbation"] == ctx.cfg.attacks[0] for r in rows):
        why = f"no image is classified correctly and attacked by {ctx.cfg.attacks[0]}"
        sec.text.append(f"Propagation skipped: {why}.")
        ctx.findings.append(
            make_finding(
                "Perturbations", "Figures 3-4 (every claim of Sec. 3.3)", "", R.not_testable(why), images=imgs
            )
        )
        return sec
    for att in ctx.cfg.attacks:
        paths = figure_file(
            propagation_figure,
            ctx.fig_dir / f"figure3_propagation_{att}",
            rows,
            ["random", att],
            title=f"{net.name}: random (top) vs {att} (bottom), {imgs}",
        )
        sec.figures.append(ctx.rel(paths[0]))
    paths = figure_file(
        propagation_figure,
        ctx.fig_dir / "figure3_propagation_controls",
        rows,
        ["random", *CONTROLS],
        title=f"{net.name}: random vs the controls, {imgs}",
    )
    sec.figures.append(ctx.rel(paths[0]))
    main_attack = ctx.cfg.attacks[0]
    paths = figure_file(
        projections_figure,
        ctx.fig_dir / "figure4_projections",
        rows,
        alphas,
        stage=stage,
        units=units,
        attack=main_attack,
        title=f"{net.name}: stage {stage}, {main_attack}, image {ids[0]}",
    )
    sec.figures.append(ctx.rel(paths[0]))
    sec.data.append(ctx.write_csv("propagation.csv", rows))
    sec.data.append(ctx.write_csv("propagation_summary.csv", summary))
    stats = per_image_statistics(rows, R.JUMP_UNITS)
    sec.data.append(ctx.write_csv("propagation_per_image.csv", stats))
    sec.tables.append((f"Summary per perturbation ({imgs})", summary))
    ctx.findings.extend(_findings(ctx, net, stats, ids))
    return sec


def _matrix(stats: list[dict], ids: list[str], name: str, key: str) -> np.ndarray:
    """Per image, the statistic ``key`` of perturbation ``name`` (NaN where absent)."""
    got = {s["image"]: float(s[key]) for s in stats if s["perturbation"] == name}
    return np.array([got.get(i, math.nan) for i in ids])


def _random_matrix(stats: list[dict], ids: list[str], key: str) -> np.ndarray:
    """``(images, seeds)``: the statistic of every random repeat."""
    names = sorted({s["perturbation"] for s in stats if random_repeat(s["perturbation"]) is not None})
    return np.stack([_matrix(stats, ids, n, key) for n in names], axis=1)


def _log(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(a)


def _findings(ctx: ReportContext, net, stats: list[dict], ids: list[str]) -> list[Finding]:
    section = "Perturbations"
    seed = ctx.cfg.seed
    out: list[Finding] = []
    adv = ctx.cfg.attacks[0]
    imgs = ctx.images_text(len(ids))
    nst = len(net.stages)
    last = net.stages[-1]
    n_base = sum(1 for u in last[: max(0, len(last) - R.JUMP_UNITS)] if u.kind == "regular")

    def flips(name):
        f = [s["flipped"] for s in stats if s["perturbation"] == name]
        return f"{sum(f)}/{len(f)} flip"

    # P1: perturbations mostly increase in stages 1..L-1
    claim = (
        "In the first two stages the perturbations mostly increase, random and adversarial (Sec. 3.3, Fig. "
        "3)."
    )
    stat = (
        f"per image: fraction of the regular units of stages 1..{nst - 1} whose growth ||dx_k||/||dx_k-1|| > "
        "1 "
        f"({adv}; random: mean over seeds); median over images"
    )
    if nst < 2:
        out.append(make_finding(section, claim, stat, R.not_testable("one stage only")))
    else:
        e_adv = estimate(_matrix(stats, ids, adv, "frac_growing_early"), seed)
        e_rnd = estimate(_random_matrix(stats, ids, "frac_growing_early"), seed)
        dec = R.all_of([R.level_above(e_adv, R.MOST), R.level_above(e_rnd, R.MOST)])
        out.append(
            make_finding(
                section,
                claim,
                stat,
                dec,
                e_adv,
                images=imgs,
                measured=f"{adv} {e_adv.text('.3g', 100, '%')}; random {e_rnd.text('.3g', 100, '%')}",
            )
        )
    # P2: adversarial grows faster than random in stages 1..L-1
    claim = (
        "Adversarial perturbations grow faster than random ones in the first two stages (Sec. 3.3, Fig. 3)."
    )
    stat = (
        "per image and seed: log of the geometric-mean growth over the regular units of stages "
        f"1..{nst - 1}, "
        f"{adv} minus random (same L2 norm); median over images"
    )
    d = _log(_matrix(stats, ids, adv, "growth_early"))[:, None] - _log(
        _random_matrix(stats, ids, "growth_early")
    )
    out.append(
        _directional(
            section, claim, stat, d, "greater", "the log growth difference", imgs, seed, f"{adv} - random > 0"
        )
    )
    # P3: random perturbations decrease in the last stage
    claim = "In the third stage random perturbations decrease (Sec. 3.3, Fig. 3 top)."
    stat = (
        "per image and seed: geometric-mean growth of random noise over the regular units of the last stage; "
        "median"
    )
    g = _random_matrix(stats, ids, "growth_last")
    est, test = estimate(g, seed), signed_rank(g, "less", 1.0, log=True)
    out.append(
        make_finding(
            section,
            claim,
            stat,
            R.directional(est, test, "less", "the growth", null=1.0)
            if nst >= 2
            else R.not_testable("one stage only: the last stage is also the first"),
            est,
            test,
            test_what="log growth < 0",
            images=imgs,
            measured=f"growth {est.text()}",
        )
    )
    # P4: the jump, with the non-flipping control
    claim = (
        f"Adversarial ({adv}) perturbations jump at the end of the last stage; random ones do not (Sec. 3.3, "
        "Fig. 3, "
        "abstract) -- with the control that does not reach the decision boundary (FGSM at half the minimal "
        "eps)."
    )
    stat = (
        f"per image and seed: jump = log growth over the last {R.JUMP_UNITS} units minus log growth over the "
        f"regular units of the last stage before them (down-sampling unit excluded), {adv} minus random; "
        "median"
    )
    rnd_jump = _random_matrix(stats, ids, "jump")
    if n_base < R.MIN_BASELINE_UNITS:
        why = (
            f"the last stage of {net.name} has {len(last)} units: {n_base} regular unit(s) before the last "
            f"{R.JUMP_UNITS}, fewer than the {R.MIN_BASELINE_UNITS} a stage mean needs"
        )
        out.append(make_finding(section, claim, stat, R.not_testable(why), images=imgs))
        for name in [a for a in (*ctx.cfg.attacks[1:], *CONTROLS) if a != "fgsm-half"]:
            out.append(
                make_finding(
                    section, _open_claim(name, adv), stat.replace(adv, name), R.not_testable(why), images=imgs
                )
            )
    else:
        main_d = _matrix(stats, ids, adv, "jump")[:, None] - rnd_jump
        half_d = _matrix(stats, ids, "fgsm-half", "jump")[:, None] - rnd_jump
        e_main, t_main = estimate(main_d, seed), signed_rank(main_d, "greater")
        e_half, t_half = estimate(half_d, seed), signed_rank(half_d, "greater")
        main = R.directional(e_main, t_main, "greater", "the jump difference")
        ctrl = R.directional(e_half, t_half, "greater", "the jump difference")
        dec = R.with_control(main, ctrl, "fgsm-half minus random")
        measured = (
            f"{adv} - random {e_main.text()}; fgsm-half - random {e_half.text()} (p = {t_half.p_value:.3g}); "
            f"jump {adv} {np.nanmedian(_matrix(stats, ids, adv, 'jump')):.3g}, fgsm-half "
            f"{np.nanmedian(_matrix(stats, ids, 'fgsm-half', 'jump')):.3g}, random "
            f"{np.nanmedian(rnd_jump):.3g}; "
            f"{flips(adv)}, fgsm-half {flips('fgsm-half')}"
        )
        out.append(
            make_finding(
                section,
                claim,
                stat,
                dec,
                e_main,
                t_main,
                test_what=f"{adv} - random > 0",
                images=imgs,
                measured=measured,
            )
        )
        # the open question: other attacks and the fixed-budget controls
        for name in [a for a in (*ctx.cfg.attacks[1:], *CONTROLS) if a != "fgsm-half"]:
            dd = _matrix(stats, ids, name, "jump")[:, None] - rnd_jump
            f = _directional(
                section,
                _open_claim(name, adv),
                stat.replace(adv, name),
                dd,
                "greater",
                "the jump difference",
                imgs,
                seed,
                f"{name} - random > 0",
            )
            f.measured += f"; {flips(name)}"
            out.append(f)
    # P5: alignment with the top singular vectors
    final = last[-1].address
    claim = (
        "At the final unit the adversarial perturbation is aligned with the top singular vectors, unlike "
        "random "
        "ones (Sec. 3.3, Fig. 4 bottom)."
    )
    stat = (
        f"per image and seed: log of the energy share of the perturbation entering unit {final} on the "
        "top-10 "
        f"right singular vectors (align10), {adv} minus random; median"
    )
    d = _log(_matrix(stats, ids, adv, "align10_final"))[:, None] - _log(
        _random_matrix(stats, ids, "align10_final")
    )
    f = _directional(
        section, claim, stat, d, "greater", "the log alignment difference", imgs, seed, f"{adv} - random > 0"
    )
    f.measured += (
        f"; align10 {adv} {np.nanmedian(_matrix(stats, ids, adv, 'align10_final')):.3g}, random "
        f"{np.nanmedian(_random_matrix(stats, ids, 'align10_final')):.3g}"
    )
    out.append(f)
    claim = (
        "The adversarial perturbation is much closer aligned with the top singular vectors at the final unit "
        "than "
        "elsewhere in the last stage (Sec. 3.3, Fig. 4 bottom)."
    )
    stat = (
        f"per image: log(align10 at {final} / median align10 at the earlier regular units of the last "
        "stage), "
        f"{adv}; median"
    )
    reg_last = [u for u in last if u.kind == "regular"]
    if len(reg_last) < 2:
        out.append(
            make_finding(
                section,
                claim,
                stat,
                R.not_testable("fewer than 2 regular units in the last stage"),
                images=imgs,
            )  # fmt: skip
        )
    else:
        d = _log(_matrix(stats, ids, adv, "align10_final")) - _log(
            _matrix(stats, ids, adv, "align10_earlier")
        )
        out.append(
            _directional(section, claim, stat, d, "greater", "the log ratio", imgs, seed, "log ratio > 0")
        )
    # P6: eq. (1) predicts the change of the magnitude
    claim = (
        "Linearization (eq. (1)) gives a good estimate of how much the perturbation's magnitude changes in "
        "the "
        "next unit (Sec. 3.3, Fig. 4 middle; Sec. 4)."
    )
    stat = (
        f"per image ({adv}, last stage): median relative error of ||J_k dx_k-1|| (eq. (1) with all singular "
        "vectors) against ||dx_k||; and log(that error / the error of predicting no change); median"
    )
    err = _matrix(stats, ids, adv, "lin_rel_err_last")
    naive = _matrix(stats, ids, adv, "naive_rel_err_last")
    e_err = estimate(err, seed)
    skill = _log(err) - _log(naive)
    e_sk, t_sk = estimate(skill, seed), signed_rank(skill, "less")
    dec = R.all_of(
        [R.level_below(e_err, R.GOOD_PREDICTION), R.directional(e_sk, t_sk, "less", "the log error ratio")]
    )
    out.append(
        make_finding(
            section,
            claim,
            stat,
            dec,
            e_err,
            t_sk,
            test_what="log(error / no-change error) < 0",
            images=imgs,
            measured=f"relative error {e_err.text('.3g', 100, '%')}; no-change "
            f"error {np.nanmedian(naive) * 100:.3g}%",
        )
    )
    return out


def _open_claim(name: str, adv: str) -> str:
    what = {
        "fgsm-fixed": "FGSM at a fixed eps = 8/255 (the paper's reference [7])",
        "bim": "iterative FGSM (BIM, [7]) at eps = 8/255",
    }.get(name, name.upper() if name != "deepfool" else "DeepFool")
    return f"Open question (Sec. 4): the jump at the end of the last stage also appears with {what}."


def _directional(section, claim, stat, values, direction, what, imgs, seed, test_what) -> Finding:
    est, test = estimate(values, seed), signed_rank(values, direction)
    return make_finding(
        section,
        claim,
        stat,
        R.directional(est, test, direction, what),
        est,
        test,
        test_what=test_what,
        images=imgs,
        measured=est.text(),
    )


__all__ = ["fmt", "perturbation_names", "section_propagation"]
