"""``linstab report``: the whole paper for one (or two) models in one command.

Writes ``DIR/index.html`` (opens offline; figures are files beside it), ``DIR/data/`` (CSV
tables and NPZ arrays behind every figure) and ``DIR/environment.json`` (versions, device, model
SHA-256, image set, timings). Every expensive result goes through :class:`~linstab.cache.ResultCache`
(keyed by model SHA-256, image hash, operator, method, dtype and linstab version), so a second
run is near-instant and a killed run resumes. The text under each figure is generated from the
measured numbers, with a verdict on the paper's finding.
"""

from __future__ import annotations

import csv
import html
import json
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import ResultCache, tensor_hash

__all__ = ["ReportConfig", "Finding", "build_report", "add_parser"]


@dataclass
class ReportConfig:
    """What the report computes.

    Attributes:
        models: registry names (one or two; the first is the main model).
        images: default-image indices used for per-image statistics.
        quick: fewer images, top-k instead of full stage spectra, fewer attacks.
        attacks: attacks for the propagation section.
        out: output folder.
        cache_dir: cache folder (``None``: default).
        use_cache: read and write the cache.
        seed: seed for random perturbations, ablation noise and frames.
    """

    models: list[str]
    images: list[int]
    quick: bool = False
    attacks: tuple[str, ...] = ("fgsm", "pgd", "deepfool", "cw")
    out: Path = Path("linstab-report")
    cache_dir: Path | None = None
    use_cache: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class Finding:
    """One line of the findings table: the paper's claim, what was measured, the verdict."""

    section: str
    claim: str
    measured: str
    verdict: str  # "reproduced", "not reproduced", "partly", "n/a"


@dataclass
class Section:
    title: str
    figures: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Ctx:
    """Shared state while building a report."""

    def __init__(self, cfg: ReportConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.fig_dir = self.out / "figures"
        self.data_dir = self.out / "data"
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache = ResultCache(cfg.cache_dir, enabled=cfg.use_cache)
        self.findings: list[Finding] = []
        self.sections: list[Section] = []
        self.timings: dict[str, float] = {}

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    def write_csv(self, name: str, rows: list[dict]) -> str:
        path = self.data_dir / name
        if rows:
            keys = list(rows[0].keys())
            for r in rows[1:]:
                keys += [k for k in r if k not in keys]
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(rows)
        else:
            path.write_text("")
        return self.rel(path)

    def write_npz(self, name: str, **arrays) -> str:
        path = self.data_dir / name
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.rel(path)

    def progress(self, it, desc: str, total: int | None = None):
        if not self.cfg.progress:
            return it
        from tqdm.auto import tqdm

        return tqdm(it, desc=desc, total=total, leave=False)


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def _section_jacobian_tests(ctx: _Ctx, net, images) -> Section:
    from .checks import jacobian_test

    sec = Section("Jacobian (Taylor) tests")
    rows = []
    picks = [net.stages[s][min(4, len(net.stages[s]) - 1)] for s in range(len(net.stages))]
    picks += [st[0] for st in net.stages[1:]]
    x = images[0]
    for u in ctx.progress(picks, "jacobian tests"):
        for smooth in ("softplus", None):
            parts = {
                "model": net.sha256 or net.name,
                "image": tensor_hash(x),
                "unit": u.address,
                "smooth": smooth,
                "what": "taylor",
            }

            def compute(u=u, smooth=smooth):
                r = jacobian_test(net, x, u.stage, u.index, smooth=smooth)
                return {"eps": np.array(r.eps), "err0": np.array(r.err0), "err1": np.array(r.err1)}, {
                    "order": r.order,
                    "order0": r.order0,
                    "passed": r.passed,
                    "exact_below_eps": r.exact_below_eps,
                    "activation": r.activation,
                }

            arrays, meta = ctx.cache.get_or_compute("taylor", parts, compute)
            rows.append(
                {
                    "unit": u.address,
                    "kind": u.kind,
                    "activation": meta["activation"],
                    "order": round(float(meta["order"]), 3) if meta["order"] == meta["order"] else "",
                    "first_order_slope": round(float(meta["order0"]), 3),
                    "exact_below_eps": meta["exact_below_eps"] or "",
                    "passed": meta["passed"],
                }
            )
    sec.data.append(ctx.write_csv("jacobian_tests.csv", rows))
    sec.tables.append(("Taylor test per unit (image 0)", rows))
    smooth_orders = [r["order"] for r in rows if r["activation"] != "relu" and r["order"] != ""]
    relu_exact = [r for r in rows if r["activation"] == "relu" and r["exact_below_eps"] != ""]
    ok = smooth_orders and min(smooth_orders) >= 1.9
    sec.text.append(
        f"With every ReLU of the tested unit replaced by softplus, the residual "
        f"||F(x+eps dx)-F(x)-eps J dx|| falls with order {_fmt(min(smooth_orders))} to "
        f"{_fmt(max(smooth_orders))} over {len(smooth_orders)} units (2 expected). With ReLU, "
        f"{len(relu_exact)} of {len(rows) // 2} units are linear to round-off below some eps (no "
        "activation crosses zero), so the residual drops to round-off at once."
    )
    ctx.findings.append(
        Finding(
            "Jacobian test",
            "The linearization is correct (Taylor residual is second order).",
            f"order {_fmt(min(smooth_orders))}-{_fmt(max(smooth_orders))} with softplus",
            "reproduced" if ok else "not reproduced",
        )
    )
    return sec


def _ablations_cached(ctx: _Ctx, net, x, u, alphas, ts):
    """Skip-scaling and weight-interpolation studies of unit ``u`` through the cache."""
    from .ablations import AblationPoint, skip_scaling_study, weight_interpolation_study

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


def _section_ablations(ctx: _Ctx, net, images) -> Section:
    from .plots.ablations import plot_ablations

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


def _section_dynamics(ctx: _Ctx, net, images) -> Section:
    from .dynamics import lyapunov_spectrum, unit_eigenvalues
    from .plots.ablations import plot_eigenvalues, plot_lyapunov
    from .spectra import spectrum

    sec = Section("Dynamics: eigenvalues and local Lyapunov spectrum (beyond the paper)")
    x = images[0]
    lin = net.linearize(x, dtype=torch.float64)
    picks = [st[min(4, len(st) - 1)] for st in net.stages]
    picks = [u for u in picks if u.in_shape == u.out_shape]
    if ctx.cfg.quick:  # quick mode: eigenvalues of the units with at most 2 * QUICK_EXACT_MAX values
        skipped = [u.address for u in picks if u.n_out > 2 * QUICK_EXACT_MAX]
        picks = [u for u in picks if u.n_out <= 2 * QUICK_EXACT_MAX]
        if skipped:
            sec.text.append(
                f"Quick mode: eigenvalues of units with at most {2 * QUICK_EXACT_MAX} values only "
                f"(skipped: {', '.join(skipped)})."
            )
    eig, smax, rows = {}, {}, []
    for u in ctx.progress(picks, "eigenvalues"):
        J = lin.unit(u.stage, u.index)
        parts = {"model": net.sha256 or net.name, "image": tensor_hash(x), "unit": u.address, "what": "eig"}

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
        from .dynamics import EigenResult

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
        paths = plot_eigenvalues(eig, smax, ctx.fig_dir / "eigenvalues", title=f"{net.name}, image 0")
        sec.figures.append(ctx.rel(paths[0]))
        sec.data.append(ctx.write_csv("eigenvalues.csv", rows))
        sec.data.append(
            ctx.write_npz("eigenvalues.npz", **{k.replace(".", "_"): v.values for k, v in eig.items()})
        )
        sec.tables.append(("Eigenvalues vs singular values", rows))
        sec.text.append(
            "Spectral radius vs largest singular value: "
            + "; ".join(
                f"unit {r['unit']}: rho={_fmt(r['spectral_radius'], 4)}, "
                f"sigma_max={_fmt(r['sigma_max'], 4)}, {r['n_eig_exactly_1']} eigenvalues exactly 1 "
                f"and {r['n_eig_exactly_0']} exactly 0 of {r['n']}"
                for r in rows
            )
            + "."
        )
    k = 8 if ctx.cfg.quick else 16
    ly = lyapunov_spectrum(lin, k=k, seed=ctx.cfg.seed)
    paths = plot_lyapunov(ly, ctx.fig_dir / "lyapunov", title=f"{net.name}, image 0, k={k}")
    sec.figures.append(ctx.rel(paths[0]))
    sec.data.append(ctx.write_npz("lyapunov.npz", units=np.array(ly.units), log_growth=ly.log_growth))
    rows2 = []
    for s in range(1, len(net.stages) + 1):
        S = lin.stage(s)
        top = spectrum(S, method="topk", k=1)
        rows2.append(
            {
                "stage": s,
                "sum_log_growth_top_direction": round(ly.stage_log_growth_top[s], 4),
                "log_sigma_max_stage": round(float(np.log(float(top.values[0]))), 4),
            }
        )
    sec.tables.append(("Lyapunov top direction vs stage operator", rows2))
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


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
def _table_html(rows: list[dict], limit: int = 60) -> str:
    if not rows:
        return "<p><em>(empty)</em></p>"
    keys = list(rows[0].keys())
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = []
    for r in rows[:limit]:
        body.append("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k, '')))}</td>" for k in keys) + "</tr>")
    more = f"<p><em>{len(rows) - limit} more rows in the CSV.</em></p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_html(ctx: _Ctx, title: str, env: dict) -> Path:
    css = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}"
        ".reproduced{color:#070}.not{color:#a00}.partly{color:#a60}"
    )
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    parts.append(
        f"<p>Model(s): {html.escape(', '.join(env['models_names']))}. Images: {html.escape(env['images'])}. "
        f"Mode: {'quick' if ctx.cfg.quick else 'full'}. Generated {html.escape(env['date'])} in "
        f"{env['timings']['total_s']:.1f} s (cache: {ctx.cache.hits} hits, {ctx.cache.misses} misses). "
        "Machine and versions: <a href='environment.json'>environment.json</a>.</p>"
    )
    parts.append("<h2>Findings</h2>")
    rows = [
        {"section": f.section, "paper": f.claim, "measured": f.measured, "verdict": f.verdict}
        for f in ctx.findings
    ]
    t = _table_html(rows)
    for v, cls in (("not reproduced", "not"), ("reproduced", "reproduced"), ("partly", "partly")):
        t = t.replace(f"<td>{v}</td>", f"<td class='{cls}'>{v}</td>")
    parts.append(t)
    for sec in ctx.sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        for fig in sec.figures:
            parts.append(f"<p><img src='{html.escape(fig)}' alt='{html.escape(fig)}'></p>")
        for txt in sec.text:
            parts.append(f"<p>{html.escape(txt)}</p>")
        for cap, rows in sec.tables:
            parts.append(f"<h3>{html.escape(cap)}</h3>{_table_html(rows)}")
        if sec.data:
            links = ", ".join(f"<a href='{html.escape(d)}'>{html.escape(d)}</a>" for d in sec.data)
            parts.append(f"<p>Data: {links}. Computed in {sec.seconds:.1f} s.</p>")
    # lets a headless browser (and the test suite) confirm that every figure loaded
    parts.append(
        "<script>window.addEventListener('load',function(){var im=[].slice.call(document.images);"
        "var ok=im.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;"
        "document.body.setAttribute('data-images-loaded',ok+'/'+im.length);});</script>"
    )
    parts.append("</body></html>")
    path = ctx.out / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


def _environment(ctx: _Ctx, nets, image_ids) -> dict:
    import scipy

    from . import __version__

    return {
        "linstab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "models": [{"name": n.name, "sha256": n.sha256, "units": len(n.units)} for n in nets],
        "models_names": [n.name for n in nets],
        "images": "lossless CIFAR-10 test images (foolbox) " + ",".join(str(i) for i in image_ids),
        "quick": ctx.cfg.quick,
        "cache_dir": str(ctx.cache.root) if ctx.cache.enabled else None,
    }


SECTIONS = ("jacobian", "spectra", "propagation", "ablations", "dynamics")


def _for_model(ctx: _Ctx, net, build) -> Section:
    """``build(net)`` for one of several models: figures and data in per-model subfolders, the
    model's name on the section title and on the findings it adds."""
    t0, n_found = time.perf_counter(), len(ctx.findings)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", net.name)
    old = ctx.fig_dir, ctx.data_dir
    ctx.fig_dir, ctx.data_dir = old[0] / safe, old[1] / safe
    ctx.fig_dir.mkdir(parents=True, exist_ok=True)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        sec = build(net)
    finally:
        ctx.fig_dir, ctx.data_dir = old
    sec.title += f" - {net.name}"
    sec.seconds = time.perf_counter() - t0
    for f in ctx.findings[n_found:]:
        f.section += f" ({net.name})"
    return sec


def build_report(cfg: ReportConfig, sections: tuple[str, ...] = SECTIONS, nets: list | None = None) -> Path:
    """Compute everything and write the report; returns the path of ``index.html``.

    Args:
        cfg: what to compute and where to write it.
        sections: a subset of :data:`SECTIONS`.
        nets: already built :class:`~linstab.network.Network` objects to use instead of loading
            ``cfg.models`` (e.g. a user's own network).
    """
    from .data import default_images
    from .network import load_model

    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown sections {bad}; choose from {SECTIONS}")
    if not cfg.models and not nets:
        raise ValueError("at least one model is needed")
    t_start = time.perf_counter()
    ctx = _Ctx(cfg)
    nets = nets if nets else [load_model(m) for m in cfg.models]
    images, labels = default_images(cfg.images)
    per_net = {
        "jacobian": lambda net: _section_jacobian_tests(ctx, net, images),
        "propagation": lambda net: _section_propagation(ctx, net, images, labels),
        "ablations": lambda net: _section_ablations(ctx, net, images),
        "dynamics": lambda net: _section_dynamics(ctx, net, images),
    }
    for name in sections:
        t0 = time.perf_counter()
        if name == "spectra":  # Figures 1-2: every model in the same figures
            secs = [_section_spectra(ctx, nets, images)]
        elif len(nets) == 1:
            secs = [per_net[name](nets[0])]
        else:  # one section per model
            secs = [_for_model(ctx, net, per_net[name]) for net in nets]
        if len(secs) == 1:
            secs[0].seconds = time.perf_counter() - t0
        ctx.timings[name + "_s"] = round(time.perf_counter() - t0, 2)
        ctx.sections.extend(secs)
    ctx.timings["total_s"] = round(time.perf_counter() - t_start, 2)
    env = _environment(ctx, nets, cfg.images)
    env["timings"] = ctx.timings
    env["cache"] = {"hits": ctx.cache.hits, "misses": ctx.cache.misses}
    (ctx.out / "environment.json").write_text(json.dumps(env, indent=1))
    ctx.write_csv("findings.csv", [f.__dict__ for f in ctx.findings])
    return _write_html(ctx, f"linstab report: {', '.join(n.name for n in nets)}", env)


def _scree_cached(ctx: _Ctx, net, images) -> dict:
    """``spectra.scree_data`` through the cache (arrays per panel and image)."""
    from .spectra import scree_data

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
            d = _scree_quick(net, images, progress=ctx.cfg.progress)
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
QUICK_EXACT_MAX = 4096  # quick mode: exact spectra up to this size, top-k values above it
QUICK_TOPK = 64


def _scree_quick(net, images, progress: bool = True) -> dict:
    """Figure 1 data in quick mode: exact spectra for units with at most
    :data:`QUICK_EXACT_MAX` singular values, the :data:`QUICK_TOPK` largest for larger units
    and for every stage operator."""
    from .spectra import spectrum

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
                res = spectrum(op, "exact") if exact else spectrum(op, "topk", k=min(QUICK_TOPK, n))
                p["n"] = n
                p.setdefault("method", []).append(res.method)
                p["spectra"].append(res.values.to(torch.float64).numpy())
                p.setdefault("exact_ones", []).append(res.n_exact_ones)
                p["alpha"] = getattr(res, "alpha", None)
    return {"model": net.name, "images": [str(i) for i in range(images.shape[0])], "rows": rows}


def _bands_cached(ctx: _Ctx, net, image) -> list[dict]:
    from .spectra import unit_bands

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


def _section_spectra(ctx: _Ctx, nets, images) -> Section:
    from .plots.spectra import plot_bands, plot_scree

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


def _propagation_cached(ctx: _Ctx, net, images, labels):
    from .perturbations import analyze, default_projection_units

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


def _section_propagation(ctx: _Ctx, net, images, labels) -> Section:
    from .plots import save_figure
    from .plots.perturbations import projections_figure, propagation_figure

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
            + ", ".join(f"{p}: {_fmt(float(by[p][jump_key]))}" for p in perts if p in by)
            + "."
        )
    if align_key:
        sec.text.append(
            f"Alignment of the incoming perturbation with the top-10 right singular vectors ({align_key}): "
            + ", ".join(f"{p}: {_fmt(float(by[p][align_key]))}" for p in perts if p in by)
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
                f"{_fmt(jumps.get(main_attack, float('nan')))} vs random {_fmt(rnd)}",
                "reproduced" if main_attack in bigger else "not reproduced",
            )
        )
        ctx.findings.append(
            Finding(
                "Perturbations",
                "Open question: is the jump specific to the attack?",
                "; ".join(f"{p} {_fmt(jumps[p])}" for p in adv) + f"; random {_fmt(rnd)}",
                f"{len(bigger)} of {len(adv)} attacks exceed random",
            )
        )
    return sec


# --------------------------------------------------------------------------------------------
def _cmd_report(args) -> int:
    from .cli import default_model_name, parse_index_spec

    models = args.model or [default_model_name()]
    n_img = 5 if args.quick else 10
    images = parse_index_spec(args.images, 20) if args.images else list(range(n_img))
    attacks = (
        tuple(a.strip() for a in args.attacks.split(","))
        if args.attacks
        else (("fgsm", "pgd") if args.quick else ("fgsm", "pgd", "deepfool", "cw"))
    )
    cfg = ReportConfig(
        models=models,
        images=images,
        quick=args.quick,
        attacks=attacks,
        out=Path(args.out),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        use_cache=not args.no_cache,
        seed=args.seed,
        progress=not args.no_progress,
    )
    sections = tuple(s.strip() for s in args.sections.split(",")) if args.sections else SECTIONS
    path = build_report(cfg, sections)
    print(f"report written to {path}")
    return 0


def add_parser(sub) -> None:
    """Register ``linstab report``."""
    p = sub.add_parser("report", help="reproduce the whole paper for a model (HTML, data, figures)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="registered model; give twice for two models side by side (default: the default model)",
    )
    p.add_argument("--images", default=None, help="default-image indices (default: 0-9, quick: 0-4)")
    p.add_argument("--out", default="linstab-report", help="output folder (default: linstab-report)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer images, top-k for stages, FGSM and PGD only (a few minutes on 2 CPU cores)",
    )
    p.add_argument("--attacks", default=None, help="comma list of attacks (default: all; quick: fgsm,pgd)")
    p.add_argument("--sections", default=None, help=f"comma list of sections (default: all of {SECTIONS})")
    p.add_argument(
        "--cache-dir", default=None, help="cache location (default: $LINSTAB_CACHE_DIR or ~/.cache/linstab)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_report)
