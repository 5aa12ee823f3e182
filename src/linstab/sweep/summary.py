"""Summary of a sweep: per-unit statistics with bootstrap confidence intervals over images, figures.

Statistics (per model, means over the images with a value; ``status == "ok"`` rows only):

* bands: ``frac_above``, ``frac_plateau``, ``frac_below``, ``frac_zero`` per unit (Figure 2);
* topk: ``sigma1``, the largest singular value, per unit;
* propagation: ``growth`` per unit and perturbation; per image and perturbation the
  ``jump_ratio`` (geometric-mean growth over the last 3 units of the last stage over that of the
  stage's regular units before them, as in the report's findings; down-sampling units, whose
  raw-norm ratio is partly a dimension effect, excluded; > 1: a jump at the end, the paper's
  Figure 3), the attack radius ``attack_eps``
  (L-inf, FGSM/PGD) and ``attack_l2`` (images the attack flipped), and ``flipped``: the
  fraction of attacked images whose label flipped (``ok`` rows, and ``skipped`` rows of an
  attack that did not flip a correctly classified image; images that were not perturbed --
  misclassified, or no reference norm for ``random`` -- have no value);
* per image: ``margin`` (logit of the label minus the largest other logit), ``correct`` (over
  the images with a label and a prediction: a failed task has no prediction);
* Spearman correlations of the margin with the jump ratio and with the attack radius.

Confidence intervals are percentile bootstrap intervals over images (seeded): resample the
images with replacement ``n_resamples`` times, take the mean of each statistic over the
resampled images that have a value, and report the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles (linear interpolation). All statistics of a model share the
same resamples. For one complete statistic this is exactly ``scipy.stats.bootstrap(...,
method="percentile")`` with the same generator and batch (checked in the tests). A statistic
with a value for fewer than 2 images has no interval (NaN bounds, printed ``(no interval)``
beside ``n``), as :func:`linstab.analyses.statistics.bootstrap_ci` gives.

The directory is checked first: a manifest of another format, a ``.parquet`` file in ``rows/``
that is not a task file of the sweep (another name or schema), a task file that cannot be read,
or rows of a model the manifest does not list (or with other weights) are refused with an
error naming the file (:func:`linstab.sweep.store.read_rows`).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no backend is ever set) and
written as PNG and SVG to the folder the caller gives.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..analyses.statistics import bootstrap_means
from ..io.validate import check_int
from ..linalg.results import BANDS
from ..plots.sweep import plot_sweep
from .store import ROWS, done_tasks, read_manifest, read_rows

__all__ = [
    "sweep_statistics",
    "format_statistics",
    "plot_sweep",
    "summarize_sweep",
]


# ============================================================================================
# statistics
# ============================================================================================
def _check_models(out, manifest: dict, table) -> None:
    """Refuse rows of a model the manifest does not list, or with another SHA-256.

    Such rows come from a task file copied from another sweep; the message names the files.
    """
    import pyarrow.parquet as pq

    models = manifest.get("models") or {}
    if table.num_rows == 0 or not models:
        return
    expected = {name: (m or {}).get("sha256") for name, m in models.items()}

    def foreign(t) -> bool:
        pairs = zip(_col(t, "model").tolist(), _col(t, "model_sha256").tolist(), strict=True)
        return any(m not in expected or bool(expected[m] and h != expected[m]) for m, h in pairs)

    if not foreign(table):
        return
    rows_dir = Path(out) / ROWS
    names = sorted(
        n for n in done_tasks(out) if foreign(pq.read_table(rows_dir / n, columns=["model", "model_sha256"]))
    )
    listed = ", ".join(f"{n} ({h})" for n, h in expected.items())
    raise ValueError(
        f"{out}: rows of models or weights that the manifest does not list ({listed}), in "
        + ", ".join(str(rows_dir / n) for n in names[:10])
        + (" ..." if len(names) > 10 else "")
        + ": task files of another sweep? Move them out of the directory"
    )


def _col(table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def _floats(table, name: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    arr = table.column(name).to_numpy(zero_copy_only=False)
    if arr.dtype == object:
        return np.array([np.nan if v is None else v for v in arr], dtype=np.float64)
    return arr.astype(np.float64)


def _unit_key(addr: str) -> tuple[int, ...]:
    return tuple(int(t) for t in str(addr).split("."))


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan, math.nan, n
    from scipy.stats import spearmanr

    r = spearmanr(a[ok], b[ok])
    return float(r.statistic), float(r.pvalue), n


class _Matrix:
    """Statistics of one model as columns over its images (NaN: no value)."""

    def __init__(self, n_images: int) -> None:
        self.n = n_images
        self.keys: list[tuple[str, str | None, str | None, str]] = []
        self.cols: list[np.ndarray] = []

    def add(self, key: tuple, idx: np.ndarray, vals: np.ndarray) -> None:
        v = np.full(self.n, np.nan)
        v[idx] = vals
        self.keys.append(key)
        self.cols.append(v)

    def array(self) -> np.ndarray:
        return np.stack(self.cols, 1) if self.cols else np.empty((self.n, 0))


def _image_positions(table, pos: dict[str, int]) -> np.ndarray:
    return np.array([pos[i] for i in _col(table, "image").tolist()], dtype=np.int64)


def _unit_stats(ok, pos: dict[str, int], units: list[str], mat: _Matrix) -> None:
    """Per-unit columns: band fractions, sigma_1, growth per perturbation."""
    import pyarrow.compute as pc

    for an in ("bands", "topk", "propagation"):
        sub = ok.filter(pc.equal(ok["analysis"], an))
        if sub.num_rows == 0:
            continue
        su, sp, si = _col(sub, "unit"), _col(sub, "perturbation"), _image_positions(sub, pos)
        if an == "bands":
            vals = {f"frac_{b}": _floats(sub, f"frac_{b}") for b in BANDS}
        elif an == "topk":
            vals = {"sigma1": np.array([v[0] if v else np.nan for v in sub.column("topk").to_pylist()])}
        else:
            vals = {"growth": _floats(sub, "growth")}
        perts = list(dict.fromkeys(x for x in sp.tolist() if x)) if an == "propagation" else [None]
        for pert in perts:
            for u in units:
                sel = (su == u) if pert is None else (su == u) & (sp == pert)
                if sel.any():
                    for stat, arr in vals.items():
                        mat.add((an, u, pert, stat), si[sel], arr[sel])


def _image_stats(
    mt, pos: dict[str, int], margin: np.ndarray, classified: np.ndarray, mat: _Matrix
) -> tuple[dict, list[dict]]:
    """Per image and perturbation: jump ratio, attack radius, flipped; margin correlations.

    ``classified`` ``(images,)``: the image is correctly classified (or has no label), i.e. the
    attacks perturbed it.
    """
    import pyarrow.compute as pc

    per_image: dict = {}
    correlations: list[dict] = []
    prop = mt.filter(pc.equal(mt["analysis"], "propagation"))
    if prop.num_rows == 0:
        return per_image, correlations
    pp, pimg, status = _col(prop, "perturbation"), _image_positions(prop, pos), _col(prop, "status")
    every = np.arange(mat.n)
    for pert in dict.fromkeys(x for x in pp.tolist() if x):
        sel = np.flatnonzero(pp == pert)
        idx, first = np.unique(pimg[sel], return_index=True)
        rows = sel[first]  # one row per image carries the per-image fields
        ok = status[rows] == "ok"
        cols = {}
        for stat in ("jump_ratio", "attack_eps", "attack_l2"):
            v = np.full(mat.n, np.nan)
            v[idx[ok]] = _floats(prop, stat)[rows][ok]
            cols[stat] = v
            if np.isfinite(v).any():
                mat.add(("propagation", None, pert, stat), every, v)
            rho, p, n = _spearman(margin, v)
            if n:
                correlations.append(
                    {"perturbation": pert, "x": "margin", "y": stat, "spearman": rho, "p_value": p, "n": n}
                )
        # attacked images only: ok rows, and skipped rows of an attack that did not flip a
        # correctly classified image; an image that was not perturbed has no outcome (its row
        # has a null; directories written before that have False, hence the classification test)
        raw = _col(prop, "attack_flipped")[rows]
        st = status[rows]
        has_value = np.array([f is not None for f in raw], dtype=bool)
        attacked = (st == "ok") | ((st == "skipped") & has_value & classified[idx])
        if attacked.any():
            flipped = np.array([1.0 if f else 0.0 for f in raw[attacked]])
            mat.add(("propagation", None, pert, "flipped"), idx[attacked], flipped)
        per_image[pert] = {k: v.tolist() for k, v in cols.items()}
    return per_image, correlations


def sweep_statistics(
    out: str | os.PathLike,
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Per-unit and per-image statistics of a sweep directory, with bootstrap intervals.

    Returns:
        ``{"directory", "manifest", "settings", "models": {name: {"images", "lossy",
        "tasks_with_errors", "error_rows", "skipped_rows", "units", "stats", "per_image",
        "correlations"}}}``; each of ``stats`` is ``{"analysis", "unit", "perturbation",
        "statistic", "n", "mean", "ci_low", "ci_high"}`` (``unit``/``perturbation`` ``None``
        where not applicable; ``analysis == "image"`` for ``margin`` and ``correct``). Model
        ``i`` is resampled with seed ``seed + i``.
    """
    import pyarrow.compute as pc

    check_int("n_resamples", n_resamples)
    check_int("seed", seed, 0)  # model i is resampled with numpy's generator of seed + i (>= 0)
    manifest = read_manifest(out)
    table = read_rows(out)
    _check_models(out, manifest, table)
    result = {
        "directory": str(out),
        "manifest": {k: manifest.get(k) for k in ("linstab_version", "image_source", "lossy", "recipe")},
        "settings": {
            "n_resamples": n_resamples,
            "confidence": confidence,
            "seed": seed,
            "method": "percentile bootstrap over images",
        },
        "models": {},
    }
    for mi, model in enumerate(dict.fromkeys(_col(table, "model").tolist())):
        mt = table.filter(pc.equal(table["model"], model))
        status = _col(mt, "status")
        images, first = np.unique(_col(mt, "image"), return_index=True)
        pos = {im: i for i, im in enumerate(images.tolist())}
        margin, label, pred = (_floats(mt, c)[first] for c in ("margin", "label", "prediction"))
        ok = mt.filter(pc.equal(mt["status"], "ok"))
        units = sorted({u for u in _col(ok, "unit").tolist() if u}, key=_unit_key)
        mat = _Matrix(len(images))
        _unit_stats(ok, pos, units, mat)
        classified = ~np.isfinite(label) | (label == pred)
        per_image, correlations = _image_stats(mt, pos, margin, classified, mat)
        mat.add(("image", None, None, "margin"), np.arange(mat.n), margin)
        # images with a label and a prediction only (a failed task has a label, no prediction)
        known = np.isfinite(label) & np.isfinite(pred)
        correct = np.where(known, (label == pred).astype(np.float64), np.nan)
        if known.any():
            mat.add(("image", None, None, "correct"), np.arange(mat.n), correct)
        V = mat.array()
        mean, lo, hi = bootstrap_means(V, n_resamples=n_resamples, confidence=confidence, seed=seed + mi)
        counts = np.isfinite(V).sum(0)  # bootstrap_means: NaN bounds from fewer than 2 images
        stats = [
            {
                "analysis": an,
                "unit": u,
                "perturbation": p,
                "statistic": s,
                "n": int(counts[j]),
                "mean": float(mean[j]),
                "ci_low": float(lo[j]),
                "ci_high": float(hi[j]),
            }
            for j, (an, u, p, s) in enumerate(mat.keys)
        ]
        result["models"][model] = {
            "images": len(images),
            "lossy": bool(np.any(_col(mt, "lossy")[first])),
            "tasks_with_errors": len(set(_col(mt, "task_id")[status == "error"].tolist())),
            "error_rows": int((status == "error").sum()),
            "skipped_rows": int((status == "skipped").sum()),
            "units": units,
            "stats": stats,
            "per_image": {
                "image": images.tolist(),
                "margin": margin.tolist(),
                "label": label.tolist(),
                "prediction": pred.tolist(),
                **per_image,
            },
            "correlations": correlations,
        }
    return result


# ============================================================================================
# text
# ============================================================================================
def _ci(s: dict | None, fmt: str = "{:.4g}") -> str:
    if s is None or not math.isfinite(s["mean"]):
        return "-"
    if not (math.isfinite(s["ci_low"]) and math.isfinite(s["ci_high"])):
        return f"{fmt.format(s['mean'])} (no interval)"  # fewer than 2 images; every line shows n
    return f"{fmt.format(s['mean'])} [{fmt.format(s['ci_low'])}, {fmt.format(s['ci_high'])}]"


def format_statistics(res: dict) -> str:
    """A readable text report of :func:`sweep_statistics`."""
    st = res["settings"]
    lines = [
        f"sweep {res['directory']}: {int(st['confidence'] * 100)}% percentile bootstrap CIs over images "
        f"({st['n_resamples']} resamples, seed {st['seed']}); mean [low, high]"
    ]
    src = (res["manifest"] or {}).get("image_source") or {}
    if src:
        lines.append(f"images: {src.get('name')} ({'LOSSY JPEG' if src.get('lossy') else 'lossless'})")
    if not res["models"]:
        lines.append("(no rows written yet)")
    for model, m in res["models"].items():
        lines.append("")
        lines.append(
            f"== {model}: {m['images']} images; {m['tasks_with_errors']} tasks with errors "
            f"({m['error_rows']} error rows), {m['skipped_rows']} skipped rows"
        )
        by = {}
        for s in m["stats"]:
            by[(s["analysis"], s["unit"], s["perturbation"], s["statistic"])] = s
        img = [s for s in m["stats"] if s["analysis"] == "image"]
        for s in img:
            lines.append(f"  {s['statistic']:<10} {_ci(s)}  (n={s['n']})")
        if any(k[0] == "bands" for k in by):
            lines.append("  band fractions per unit (Figure 2)")
            lines.append(f"  {'unit':<6} {'n':>5}  " + "  ".join(f"{b:<28}" for b in BANDS))
            for u in m["units"]:
                ss = [by.get(("bands", u, None, f"frac_{b}")) for b in BANDS]
                if ss[0] is None:
                    continue
                lines.append(f"  {u:<6} {ss[0]['n']:>5}  " + "  ".join(f"{_ci(s, '{:.4f}'):<28}" for s in ss))
        if any(k[0] == "topk" for k in by):
            lines.append("  largest singular value per unit")
            for u in m["units"]:
                s = by.get(("topk", u, None, "sigma1"))
                if s is not None:
                    lines.append(f"  {u:<6} {s['n']:>5}  {_ci(s)}")
        perts = list(dict.fromkeys(k[2] for k in by if k[0] == "propagation" and k[2]))
        if perts:
            lines.append("  growth per unit ||dx_k|| / ||dx_{k-1}|| (" + ", ".join(perts) + ")")
            for u in m["units"]:
                ss = [by.get(("propagation", u, p, "growth")) for p in perts]
                if all(s is None for s in ss):
                    continue
                n = max((s["n"] for s in ss if s), default=0)
                lines.append(f"  {u:<6} {n:>5}  " + "  ".join(f"{_ci(s):<28}" for s in ss))
            lines.append("  per image and perturbation")
            for p in perts:
                parts = []
                for stat in ("jump_ratio", "attack_eps", "attack_l2", "flipped"):
                    s = by.get(("propagation", None, p, stat))
                    if s is not None and s["n"]:
                        parts.append(f"{stat} {_ci(s)} (n={s['n']})")
                lines.append(f"  {p:<9} " + "; ".join(parts))
            for c in m["correlations"]:
                rho = (
                    f"{c['spearman']:.3f} (p={c['p_value']:.3g}, n={c['n']})"
                    if math.isfinite(c["spearman"])
                    else f"n/a (n={c['n']}: fewer than 3 images or constant)"
                )
                lines.append(f"  spearman(margin, {c['y']}) {c['perturbation']}: {rho}")
    return "\n".join(lines)


def _jsonable(obj):
    """NaN/inf as null, numpy scalars as Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def summarize_sweep(
    out: str | os.PathLike,
    *,
    figures: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[str, dict, list[Path]]:
    """Statistics, text report, optional figures and JSON of a sweep directory.

    Returns:
        ``(text, statistics, figure_paths)``.
    """
    res = sweep_statistics(out, n_resamples=n_resamples, confidence=confidence, seed=seed)
    text = format_statistics(res)
    paths = plot_sweep(res, figures) if figures is not None else []
    if json_path is not None:
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(_jsonable(res), indent=1) + "\n")
    return text, res, paths
