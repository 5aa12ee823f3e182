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
from pathlib import Path

from ..io.parquet import read_parquet_rows

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


def sweep_band_rows(sweep_dir: str | os.PathLike, model: str) -> list[dict]:
    """Band counts of every unit of ``model`` at every image of a sweep folder.

    Args:
        sweep_dir: the sweep's output folder (its ``rows/`` subfolder is read; a folder of
            Parquet files without ``rows/`` is read directly).
        model: the model's name as the sweep wrote it.

    Returns:
        rows in the format of :func:`linstab.analyses.network_spectra.unit_bands` (``model``,
        ``stage``, ``unit``, ``address``, ``kind``, ``n``, counts and ``frac_*``), with
        ``image`` (the sweep's image id) and ``lossy``; empty when the sweep has no band rows
        of ``model``. Rows are sorted by image, then unit.

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when the Parquet files lack a needed column.
    """
    root = Path(sweep_dir)
    rows_dir = root / "rows" if (root / "rows").is_dir() else root
    raw = read_parquet_rows(rows_dir, SWEEP_BAND_COLUMNS)
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
