"""Report section: Figure 5 (skip scaling and weight interpolation) and its findings."""

from __future__ import annotations

import numpy as np

from ..analyses.ablations import AblationPoint, skip_scaling_study, weight_interpolation_study
from ..io.cache import tensor_hash
from ..plots.ablations import plot_ablations
from .context import Finding, ReportContext, Section


def _ablations_cached(ctx: ReportContext, net, x, u, alphas, ts):
    """Skip-scaling and weight-interpolation studies of unit ``u`` through the cache."""
    parts = {
        "model": net.sha256 or net.name,
        "image": tensor_hash(x),
        "what": "ablations",
        "unit": u.address,
        "alphas": list(alphas),
        "ts": list(ts),
        "seed": ctx.cfg.seed,
        "dtype": "float64",
    }

    def compute():
        pts = skip_scaling_study(net, x, u.stage, u.index, alphas) + weight_interpolation_study(
            net, x, u.stage, u.index, ts, seed=ctx.cfg.seed
        )
        arrays = {f"{i}": np.asarray(p.singular_values, dtype=np.float64) for i, p in enumerate(pts)}
        meta = [
            {
                "parameter": p.parameter,
                "value": float(p.value),
                "bands": {k: int(v) for k, v in p.bands.items()},
                "n_plateau_exact": None if p.n_plateau_exact is None else int(p.n_plateau_exact),
                "plateau_value": float(p.plateau_value),
                "method": p.method,
            }
            for p in pts
        ]
        return arrays, {"points": meta}

    arrays, meta = ctx.cache.get_or_compute("ablations", parts, compute)
    pts = [AblationPoint(singular_values=arrays[f"{i}"], **d) for i, d in enumerate(meta["points"])]
    return [p for p in pts if p.parameter == "alpha"], [p for p in pts if p.parameter == "t"]


def section_ablations(ctx: ReportContext, net, images) -> Section:
    """Figure 5: skip scaling and weight interpolation on one regular unit, with findings."""
    sec = Section("Skip scaling and weight interpolation (Figure 5)")
    regular = [u for u in net.units if u.kind == "regular" and u.canonical is not None]
    if not regular:
        sec.text.append("No regular unit with a closed form: ablations skipped.")
        return sec
    st = net.stages[-1]
    u = next((v for v in st if v.kind == "regular"), regular[0])
    x = images[0]
    alphas = (0.5, 1.0, 1.5) if ctx.cfg.quick else (0.5, 0.75, 1.0, 1.25, 1.5)
    ts = (0.0, 0.5, 1.0) if ctx.cfg.quick else (0.0, 0.25, 0.5, 0.75, 1.0)
    a_pts, t_pts = _ablations_cached(ctx, net, x, u, alphas, ts)
    paths = plot_ablations(
        a_pts, t_pts, ctx.fig_dir / "figure5_ablations", title=f"{net.name}, unit {u.address}, image 0"
    )
    sec.figures.append(ctx.rel(paths[0]))
    rows = []
    for p in a_pts + t_pts:
        n = len(p.singular_values)
        near = int(np.sum(np.abs(np.asarray(p.singular_values) - p.plateau_value) <= 0.01 * p.plateau_value))
        rows.append(
            {
                "parameter": p.parameter,
                "value": p.value,
                "n": n,
                "plateau_value": p.plateau_value,
                "n_plateau_exact": p.n_plateau_exact if p.n_plateau_exact is not None else "",
                "n_within_1pct_of_plateau": near,
                **{f"band {k}": v for k, v in p.bands.items()},
            }
        )
    sec.data.append(ctx.write_csv("ablations.csv", rows))
    sec.data.append(
        ctx.write_npz(
            "ablations.npz",
            **{f"alpha_{p.value:g}": p.singular_values for p in a_pts},
            **{f"t_{p.value:g}": p.singular_values for p in t_pts},
        )
    )
    sec.tables.append((f"Unit {u.address}: band counts and plateau per parameter", rows))
    a_rows = [r for r in rows if r["parameter"] == "alpha"]
    moved = all(r["n_within_1pct_of_plateau"] > 0.05 * r["n"] for r in a_rows)
    t_rows = [r for r in rows if r["parameter"] == "t"]
    plateau_by_t = {r["value"]: r["n_within_1pct_of_plateau"] for r in t_rows}
    best_t = max(plateau_by_t, key=plateau_by_t.get)
    sec.text.append(
        "Skip scaling: the plateau sits at alpha: "
        + ", ".join(
            f"alpha={r['value']:g}: {r['n_within_1pct_of_plateau']} of {r['n']} values within 1% "
            f"of alpha ({r['n_plateau_exact']} exactly alpha)"
            for r in a_rows
        )
        + "."
    )
    sec.text.append(
        "Weight interpolation: values within 1% of 1 per t: "
        + ", ".join(f"t={k:g}: {v}" for k, v in plateau_by_t.items())
        + f"; the plateau is widest at t={best_t:g} (the paper: widest at t=0.5, absent at t=0)."
    )
    ctx.findings.append(
        Finding(
            "Ablations",
            "Scaling the skip by alpha moves the plateau to alpha.",
            f"plateau at alpha for all {len(a_rows)} values" if moved else "not for all alpha",
            "reproduced" if moved else "not reproduced",
        )
    )
    t0_small = plateau_by_t.get(0.0, 0) < max(plateau_by_t.values())
    ctx.findings.append(
        Finding(
            "Ablations",
            "Weight interpolation: no plateau for pure noise (t=0), widest at t=0.5.",
            f"widest at t={best_t:g}; t=0: {plateau_by_t.get(0.0, 'n/a')} values near 1",
            "reproduced" if (best_t == 0.5 and t0_small) else ("partly" if t0_small else "not reproduced"),
        )
    )
    return sec
