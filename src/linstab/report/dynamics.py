"""Report section: eigenvalues of unit Jacobians and Lyapunov spectra."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..analyses.dynamics import EigenResult, LyapunovResult, lyapunov_spectrum, unit_eigenvalues
from ..analyses.network_spectra import QUICK_EXACT_MAX, linearizer
from ..io.cache import tensor_hash
from ..io.profile import timed
from ..plots.ablations import plot_eigenvalues, plot_lyapunov
from ..spectra.spectrum import spectrum
from .context import ReportContext, Section, fmt


def _picks(ctx: ReportContext, net) -> tuple[list, str]:
    """The units whose eigenvalues the section shows (the fifth unit of each stage, same
    shape in and out, within the size limit) and the text naming the skipped ones (or "").
    """
    picks = [st[min(4, len(st) - 1)] for st in net.stages]
    picks = [u for u in picks if u.in_shape == u.out_shape]
    # eigenvalues need the whole unit: quick mode and --exact-max bound its size
    if ctx.cfg.quick:
        limit, what = (
            2 * QUICK_EXACT_MAX,
            f"Quick mode: eigenvalues of units with at most {2 * QUICK_EXACT_MAX} values only (",
        )
    else:
        limit, what = (
            ctx.cfg.exact_max,
            f"Eigenvalues of units with at most {ctx.cfg.exact_max:,} values only (--exact-max; ",
        )
    skipped = [u.address for u in picks if u.n_out > limit]
    text = f"{what}skipped: {', '.join(skipped)})." if skipped else ""
    return [u for u in picks if u.n_out <= limit], text


def _lyapunov_k(ctx: ReportContext) -> int:
    return 8 if ctx.cfg.quick else 16


def dynamics_items(ctx: ReportContext, net, images) -> list[tuple[str, dict, Callable]]:
    """The ``(kind, parts, compute)`` cache items of a model's dynamics section (eigenvalues of
    the picked units, the Lyapunov spectrum), all at the report's first image; the
    linearization is made by the first item computed. The report may compute them in a
    background process beside the spectra (:func:`~linstab.report.build.build_report`).
    """
    x = images[0]
    lin = linearizer(net, x)
    model, image = ctx.model_key(net), tensor_hash(x)
    items = []
    for u in _picks(ctx, net)[0]:

        def compute(u=u):
            with timed("eigenvalues", unit=u.address, image=ctx.image_ids[0]):
                J = lin(torch.float64).unit(u.stage, u.index)
                r = unit_eigenvalues(J)
                s = spectrum(J, method="topk", k=1)
            return {"values": r.values}, {
                "method": r.method,
                "seconds": r.seconds,
                "sigma_max": float(s.values[0]),
                "n_zero": r.n_zero_structural,
                "n_alpha": r.n_alpha_structural,
            }

        parts = {"model": model, "image": image, "unit": u.address, "what": "eig"}
        items.append(("eigenvalues", parts, compute))
    k = _lyapunov_k(ctx)

    def compute_ly():
        with timed("lyapunov", image=ctx.image_ids[0]):
            r = lyapunov_spectrum(lin(torch.float64), k=k, seed=ctx.cfg.seed)
            tops = [
                float(spectrum(lin(torch.float64).stage(s), method="topk", k=1).values[0])
                for s in range(1, len(net.stages) + 1)
            ]
        arrays = {"log_growth": r.log_growth, "cumulative": r.cumulative}
        meta = {
            "units": r.units,
            "stage_top": {str(s): v for s, v in r.stage_log_growth_top.items()},
            "tops": tops,
        }
        return arrays, meta

    parts = {"model": model, "image": image, "what": "lyapunov", "k": k, "seed": ctx.cfg.seed}
    items.append(("lyapunov", parts, compute_ly))
    return items


def section_dynamics(ctx: ReportContext, net, images) -> Section:
    """Eigenvalues of the fifth unit of each stage and the Lyapunov spectrum, with findings."""
    sec = Section("Dynamics: eigenvalues and local Lyapunov spectrum (beyond the paper)")
    picks, skipped = _picks(ctx, net)
    if skipped:
        sec.text.append(skipped)
    if ctx.prefetch.get("dynamics") is not None:
        ctx.prefetch.pop("dynamics").wait()  # computed beside the spectra
    items = dynamics_items(ctx, net, images)
    eig, smax, rows = {}, {}, []
    for u, item in zip(ctx.progress(picks, "eigenvalues"), items, strict=False):
        arrays, meta = ctx.cache.get_or_compute(*item)

        vals = arrays["values"]
        eig[u.address] = EigenResult(
            vals,
            float(np.abs(vals).max()),
            meta["method"],
            len(vals),
            meta["n_zero"],
            meta["n_alpha"],
            1.0,
            meta["seconds"],
        )
        smax[u.address] = meta["sigma_max"]
        rows.append(
            {
                "unit": u.address,
                "n": len(vals),
                "spectral_radius": float(np.abs(vals).max()),
                "sigma_max": meta["sigma_max"],
                "n_eig_exactly_0": meta["n_zero"],
                "n_eig_exactly_1": meta["n_alpha"],
                "n_complex": int(np.sum(np.abs(vals.imag) > 1e-12)),
                "method": meta["method"],
                "seconds": round(meta["seconds"], 2),
            }
        )
    if eig:
        paths = plot_eigenvalues(
            eig, smax, ctx.fig_dir / "eigenvalues", title=f"{net.name}, image {ctx.image_ids[0]}"
        )
        sec.figures.append(ctx.rel(paths[0]))
        sec.data.append(ctx.write_csv("eigenvalues.csv", rows))
        sec.data.append(
            ctx.write_npz("eigenvalues.npz", **{k.replace(".", "_"): v.values for k, v in eig.items()})
        )
        sec.tables.append((f"Eigenvalues vs singular values (image {ctx.image_ids[0]})", rows))
        sec.text.append(
            "Spectral radius vs largest singular value: "
            + "; ".join(
                f"unit {r['unit']}: rho={fmt(r['spectral_radius'], 4)}, "
                f"sigma_max={fmt(r['sigma_max'], 4)}, {r['n_eig_exactly_1']} eigenvalues exactly 1 "
                f"and {r['n_eig_exactly_0']} exactly 0 of {r['n']}"
                for r in rows
            )
            + "."
        )
    k = _lyapunov_k(ctx)
    arrays, meta = ctx.cache.get_or_compute(*items[-1])
    ly = LyapunovResult(
        units=list(meta["units"]),
        log_growth=arrays["log_growth"],
        cumulative=arrays["cumulative"],
        k=k,
        seed=ctx.cfg.seed,
        stage_log_growth_top={int(s): float(v) for s, v in meta["stage_top"].items()},
    )
    paths = plot_lyapunov(ly, ctx.fig_dir / "lyapunov", title=f"{net.name}, image {ctx.image_ids[0]}, k={k}")
    sec.figures.append(ctx.rel(paths[0]))
    sec.data.append(ctx.write_npz("lyapunov.npz", units=np.array(ly.units), log_growth=ly.log_growth))
    rows2 = []
    for s in range(1, len(net.stages) + 1):
        rows2.append(
            {
                "stage": s,
                "sum_log_growth_top_direction": round(ly.stage_log_growth_top[s], 4),
                "log_sigma_max_stage": round(float(np.log(meta["tops"][s - 1])), 4),
            }
        )
    sec.tables.append((f"Lyapunov top direction vs stage operator (image {ctx.image_ids[0]})", rows2))
    sec.data.append(ctx.write_csv("lyapunov_stages.csv", rows2))
    sec.text.append(
        f"A random {k}-frame propagated with QR after every unit: the top direction's summed log-growth "
        "per stage is "
        + ", ".join(
            f"stage {r['stage']}: {r['sum_log_growth_top_direction']:.3f} "
            f"(log sigma_max {r['log_sigma_max_stage']:.3f})"
            for r in rows2
        )
        + ". The gap shows how far a generic direction is from the stage's most unstable one."
    )
    return sec
