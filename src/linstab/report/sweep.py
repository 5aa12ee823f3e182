"""The report's one hook into a ``linstab sweep`` folder: per-unit band counts over many images.

Band fractions of every unit over many images (Figure 2 with an interval, and its trends) cost
about half a minute per image and model on two cores, too much for the report's own run. When
:attr:`~linstab.report.ReportConfig.sweep_dir` names a sweep folder, the report reads them from
it through :func:`sweep_band_rows` instead, and says so under the figure and in the findings.

The sweep writes ``DIR/rows/*.parquet`` (one file per model and image), one row per model,
image, analysis and unit. The report reads the rows with ``analysis == "bands"`` and
``status == "ok"`` and these columns (:data:`SWEEP_BAND_COLUMNS`): ``model``, ``image``,
``lossy``, ``unit`` (address ``"S.K"``), ``stage``, ``unit_index``, ``kind``, ``n`` and the counts
``above``, ``plateau``, ``below``, ``zero``, ``exact_ones``. A hand-made table with these columns
works as well (the tests use one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..io.parquet import read_parquet_rows
from ..linalg.results import PLATEAU, ZERO_TOL
from ..sweep.store import MANIFEST, ROWS, read_manifest, read_rows

REPORT_BANDS = {"thresholds": list(PLATEAU), "zero_tol": ZERO_TOL}
"""The band limits of the report's own counts: a sweep folder counted with others is refused."""

REPORT_BANDS_DTYPE = "float64"
"""The precision of the linearizations behind the report's own exact band counts: a sweep whose
counts come from linearizations in another precision is refused."""

SWEEP_BAND_COLUMNS: tuple[str, ...] = (
    "model",
    "image",
    "lossy",
    "analysis",
    "status",
    "unit",
    "stage",
    "unit_index",
    "kind",
    "n",
    "above",
    "plateau",
    "below",
    "zero",
    "exact_ones",
)


def sweep_checksums(net) -> tuple[str | None, str]:
    """What a sweep may have recorded as ``net``'s SHA-256: its weights file's (registered models,
    model files) or its state dict's (factory models).
    """
    return getattr(net, "sha256", None), net.state_sha256()


def _check_manifest(root: Path, model: str, checksums: Iterable[str | None]) -> None:
    """Refuse a sweep folder whose manifest says its band counts are not the report's: other band
    limits (:data:`REPORT_BANDS`), linearizations in another precision
    (:data:`REPORT_BANDS_DTYPE`), or a model of this name with other weights (a checksum not
    among ``checksums``; an empty ``checksums`` skips that check).
    """
    if not (root / MANIFEST).is_file():  # a hand-made table or a rows/ folder: nothing to compare
        return
    manifest = read_manifest(root)  # its format checked
    recipe = manifest.get("recipe") or {}
    if "bands" in (recipe.get("analyses") or ()):
        got = {k: recipe.get(k) for k in REPORT_BANDS}
        if got != REPORT_BANDS:
            raise ValueError(
                f"sweep folder {root} counted bands with thresholds {got['thresholds']} and zero_tol "
                f"{got['zero_tol']}; the report's Figure 2 uses {REPORT_BANDS['thresholds']} and "
                f"{REPORT_BANDS['zero_tol']}: give a sweep run with the default --thresholds and --zero-tol"
            )
        dtype = recipe.get("dtype", REPORT_BANDS_DTYPE)
        if dtype != REPORT_BANDS_DTYPE:
            raise ValueError(
                f"sweep folder {root} counted bands of {dtype} linearizations; the report's Figure 2 "
                f"counts {REPORT_BANDS_DTYPE} ones (values near the band limits can fall on the other "
                f"side): give a sweep run with --dtype {REPORT_BANDS_DTYPE}"
            )
    known = {c for c in checksums if c}
    swept = (manifest.get("models") or {}).get(model) or {}
    if known and swept.get("sha256") and swept["sha256"] not in known:
        raise ValueError(
            f"sweep folder {root} holds {model!r} with weights SHA-256 {swept['sha256']}, not the report's "
            f"{model!r} ({', '.join(sorted(known))}): another model under the same name; give its own sweep"
        )


def sweep_band_rows(
    sweep_dir: str | os.PathLike, model: str, checksums: Iterable[str | None] = ()
) -> list[dict]:
    """Band counts of every unit of ``model`` at every image of a sweep folder.

    Args:
        sweep_dir: the sweep's output folder (its ``rows/`` subfolder is read; a folder of
            Parquet files without ``rows/`` is read directly).
        model: the model's name as the sweep wrote it.
        checksums: the SHA-256 values of the report's model (its weights file, its state dict);
            when given, a sweep whose manifest holds a model of this name with another checksum
            is refused.

    Returns:
        rows in the format of :func:`linstab.analyses.network_spectra.unit_bands` (``model``,
        ``stage``, ``unit``, ``address``, ``kind``, ``n``, counts and ``frac_*``), with
        ``image`` (the sweep's image id) and ``lossy``; empty when the sweep has no band rows
        of ``model``. Rows are sorted by image, then unit.

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when the Parquet files lack a needed column, or the sweep's manifest says its
            counts used other band limits or another linearization precision than the report's,
            or another model of this name.
    """
    root = Path(sweep_dir)
    if not root.exists():
        raise FileNotFoundError(f"sweep folder {root} does not exist")
    _check_manifest(root, model, checksums)
    if (root / MANIFEST).is_file() and (root / ROWS).is_dir():
        # a sweep's own folder: only its task files, each checked (damaged or foreign files named)
        raw = read_rows(root, columns=list(SWEEP_BAND_COLUMNS)).to_pylist()
    else:
        raw = read_parquet_rows(root / ROWS if (root / ROWS).is_dir() else root, SWEEP_BAND_COLUMNS)
    out = []
    for r in raw:
        if r["analysis"] != "bands" or r["status"] != "ok" or r["model"] != model:
            continue
        n = int(r["n"])
        counts = {k: int(r[k]) for k in ("above", "plateau", "below", "zero")}
        ex = r.get("exact_ones")
        row = {
            "model": model,
            "image": str(r["image"]),
            "lossy": bool(r["lossy"]),
            "stage": int(r["stage"]),
            "unit": int(r["unit_index"]),
            "address": str(r["unit"]),
            "kind": str(r["kind"]),
            "n": n,
            **counts,
            **{f"frac_{k}": v / n for k, v in counts.items()},
            "exact_ones": None if ex is None else int(ex),
            "frac_exact_ones": None if ex is None else int(ex) / n,
        }
        out.append(row)
    out.sort(key=lambda r: (r["image"], r["stage"], r["unit"]))
    return out
