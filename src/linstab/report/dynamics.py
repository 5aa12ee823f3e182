"""Report section: eigenvalues of unit Jacobians and Lyapunov spectra."""

from __future__ import annotations

import numpy as np
import torch

from ..analyses.dynamics import EigenResult, LyapunovResult, lyapunov_spectrum, unit_eigenvalues
from ..analyses.network_spectra import QUICK_EXACT_MAX
from ..io.cache import tensor_hash
from ..plots.ablations import plot_eigenvalues, plot_lyapunov
from ..spectra.spectrum import spectrum
from .context import ReportContext, Section, fmt


def section_dynamics(ctx: ReportContext, net, images) -> Section:
    """Eigenvalues of the fifth unit of each stage and the Lyapunov spectrum, with findings."""
    sec = Section("Dynamics: eigenvalues and local Lyapunov spectrum (beyond the paper)")
    x = images[0]
    lin = net.linearize(x, dtype=torch.float64)
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
    if skipped:
        picks = [u for u in picks if u.n_out <= limit]
        sec.text.append(f"{what}skipped: {', '.join(skipped)}).")
    eig, smax, rows = {}, {}, []
    for u in ctx.progress(picks, "eigenvalues"):
        J = lin.unit(u.stage, u.index)
        parts = {"model": ctx.model_key(net), "image": tensor_hash(x), "unit": u.address, "what": "eig"}

        def compute(J=J):
            r = unit_eigenvalues(J)
            s = spectrum(J, method="topk", k=1)
            return {"values": r.values}, {
                "method": r.method,
                "seconds": r.seconds,
                "sigma_max": float(s.values[0]),
                "n_zero": r.n_zero_structural,
                "n_alpha": r.n_alpha_structural,
            }

        arrays, meta = ctx.cache.get_or_compute("eigenvalues", parts, compute)

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
    k = 8 if ctx.cfg.quick else 16
    parts = {
        "model": ctx.model_key(net),
        "image": tensor_hash(x),
        "what": "lyapunov",
        "k": k,
        "seed": ctx.cfg.seed,
    }

    def compute_ly():
        r = lyapunov_spectrum(lin, k=k, seed=ctx.cfg.seed)
        tops = [
            float(spectrum(lin.stage(s), method="topk", k=1).values[0]) for s in range(1, len(net.stages) + 1)
        ]
        arrays = {"log_growth": r.log_growth, "cumulative": r.cumulative}
        meta = {
            "units": r.units,
            "stage_top": {str(s): v for s, v in r.stage_log_growth_top.items()},
            "tops": tops,
        }
        return arrays, meta

    arrays, meta = ctx.cache.get_or_compute("lyapunov", parts, compute_ly)
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
