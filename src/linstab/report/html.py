"""The report's HTML page and its environment record."""

from __future__ import annotations

import html
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from .context import ReportContext


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


def _value_ci(v: float, lo: float, hi: float) -> str:
    if v != v:
        return ""
    if lo != lo:
        return f"{v:.4g}"
    return f"{v:.4g} [{lo:.4g}, {hi:.4g}]"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_html(ctx: ReportContext, title: str, env: dict) -> Path:
    """Write ``index.html`` with every section and the environment record."""
    css = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}"
        ".reproduced{color:#070}.not{color:#a00}.partly{color:#a60}td{text-align:left;vertical-align:top}"
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
    parts.append(
        "<p>Each finding: the statistic (median over the images unless it says otherwise), its 95% "
        "bootstrap interval over the images (and seeds), the test, the decision rule and the verdict. "
        "Thresholds and their reasons: docs/findings.md. Full table: "
        "<a href='data/findings.csv'>data/findings.csv</a>.</p>"
    )
    rows = [
        {
            "section": f.section,
            "paper": f.claim,
            "statistic": f.statistic,
            "value [95% CI]": _value_ci(f.value, f.ci_low, f.ci_high),
            "test (p)": f"{f.test} (p = {f.p_value:.3g})" if f.test else "",
            "rule": f.rule,
            "n images": f.n_images if f.n_seeds <= 1 else f"{f.n_images} x {f.n_seeds} seeds",
            "images": f.images,
            "measured": f.measured,
            "verdict": f.verdict,
            "why": f.why,
        }
        for f in ctx.findings
    ]
    t = _table_html(rows, limit=1000)
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


def model_record(net) -> dict:
    """Which network a report analysed: its name, what ``load_model`` was given for it
    (``source``: registry name, model file or ``module:function``; None when built in Python),
    the SHA-256 of its weights file (None without one), of its state dict, and its unit count.
    """
    return {
        "name": net.name,
        "source": net.source,
        "sha256": net.sha256,
        "state_sha256": net.state_sha256(),
        "units": len(net.units),
    }


def environment(ctx: ReportContext, nets, image_ids) -> dict:
    """Versions, device, models with their SHA-256, images and timings of this report."""
    import scipy

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
        "models": [model_record(n) for n in nets],
        "models_names": [n.name for n in nets],
        "images": ctx.images_text(ids=list(image_ids)),
        "image_ids": list(image_ids),
        "lossy": ctx.lossy,
        "sweep_dir": str(ctx.cfg.sweep_dir) if ctx.cfg.sweep_dir else None,
        "quick": ctx.cfg.quick,
        "cache_dir": str(ctx.cache.root) if ctx.cache.enabled else None,
    }
