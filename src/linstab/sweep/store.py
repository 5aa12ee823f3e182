"""Storage of a sweep: one Parquet file per task, written atomically, and a JSON manifest.

Layout of a sweep directory ``DIR``::

    DIR/manifest.json              linstab version, recipe (models with SHA-256, analyses and
                                   parameters, image source with its lossy flag), one entry per run
    DIR/rows/<task>.parquet        the rows of one (model, image) task

A task file is written to ``DIR/rows/.tmp-<task>-<random>.parquet`` and renamed
(``os.replace``, atomic on POSIX): a file under its final name is always complete, so a sweep
killed at any point loses at most the tasks in flight, and a task is *done* exactly when its
file exists. Names starting with ``.`` are ignored by :func:`pyarrow.dataset.dataset`, so
``DIR/rows`` reads as one dataset (:func:`read_rows`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .tasks import COLUMNS

__all__ = [
    "SCHEMA",
    "MANIFEST",
    "ROWS",
    "RecipeMismatch",
    "task_file_name",
    "write_task",
    "done_tasks",
    "error_tasks",
    "read_rows",
    "read_manifest",
    "open_sweep_dir",
    "append_run",
    "clean_temporaries",
]

MANIFEST = "manifest.json"
ROWS = "rows"
FORMAT_VERSION = 1

_TYPES = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list<float>": pa.list_(pa.float64()),
}
SCHEMA = pa.schema([pa.field(name, _TYPES[t]) for name, t in COLUMNS.items()])


class RecipeMismatch(ValueError):
    """An existing sweep directory holds results of another recipe."""


def task_file_name(task_id: str) -> str:
    """A file-system safe, unique name for a task: readable prefix + hash of the id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", task_id).strip("._")[:80] or "task"
    return f"{safe}-{hashlib.sha1(task_id.encode()).hexdigest()[:10]}.parquet"


def write_task(out: str | os.PathLike, task_id: str, rows: list[dict]) -> Path:
    """Write one task's rows atomically (temporary name, then rename) and return the path."""
    rows_dir = Path(out) / ROWS
    rows_dir.mkdir(parents=True, exist_ok=True)
    final = rows_dir / task_file_name(task_id)
    tmp = rows_dir / f".tmp-{final.stem}-{uuid.uuid4().hex[:8]}.parquet"
    table = pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in rows], schema=SCHEMA)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def clean_temporaries(out: str | os.PathLike) -> int:
    """Remove temporary files left by a killed run; returns how many."""
    rows_dir = Path(out) / ROWS
    n = 0
    if rows_dir.is_dir():
        for p in rows_dir.glob(".tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def done_tasks(out: str | os.PathLike) -> set[str]:
    """File names (:func:`task_file_name`) of the tasks already written."""
    rows_dir = Path(out) / ROWS
    if not rows_dir.is_dir():
        return set()
    return {p.name for p in rows_dir.glob("*.parquet") if not p.name.startswith(".")}


def error_tasks(out: str | os.PathLike) -> set[str]:
    """File names of written tasks holding at least one error row."""
    rows_dir = Path(out) / ROWS
    bad = set()
    for name in done_tasks(out):
        status = pq.read_table(rows_dir / name, columns=["status"]).column("status").to_pylist()
        if "error" in status:
            bad.add(name)
    return bad


def read_rows(out: str | os.PathLike, columns: list[str] | None = None, filter=None) -> pa.Table:
    """All rows of a sweep directory as one Arrow table (empty table when nothing is written).

    Args:
        out: the sweep directory.
        columns: a subset of columns.
        filter: a :mod:`pyarrow.compute` expression, e.g. ``pc.field("analysis") == "bands"``.
    """
    rows_dir = Path(out) / ROWS
    if not rows_dir.is_dir() or not done_tasks(out):
        return SCHEMA.empty_table().select(columns) if columns else SCHEMA.empty_table()
    dataset = ds.dataset(rows_dir, format="parquet", schema=SCHEMA)
    return dataset.to_table(columns=columns, filter=filter)


def read_manifest(out: str | os.PathLike) -> dict:
    """The manifest of a sweep directory.

    Raises:
        FileNotFoundError: when ``out`` holds no manifest.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a sweep directory (no {MANIFEST})")
    return json.loads(path.read_text())


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    if a != b:
        return [f"{prefix.rstrip('.')}: {json.dumps(a)} (directory) != {json.dumps(b)} (this command)"]
    return []


def open_sweep_dir(out: str | os.PathLike, recipe: dict, header: dict) -> dict:
    """Create a sweep directory, or check that an existing one holds the same recipe.

    Args:
        out: the directory.
        recipe: the run's recipe (JSON-able).
        header: fields written once when the directory is created (version, image source...).

    Returns:
        the manifest.

    Raises:
        RecipeMismatch: when the directory holds another recipe (the differences are listed).
        ValueError: when ``out`` is a non-empty directory that is not a sweep directory.
    """
    out = Path(out)
    recipe = json.loads(json.dumps(recipe))
    path = out / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        old = manifest.get("recipe")
        if old != recipe:
            diffs = _diff(old, recipe)
            raise RecipeMismatch(
                f"{out} holds a sweep with another recipe; refusing to mix results. Differences:\n  "
                + "\n  ".join(diffs[:20])
                + "\nUse another --out directory, or repeat the original command to resume it."
            )
        return manifest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"{out} exists and is not a sweep directory (no {MANIFEST}); use an empty or new directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / ROWS).mkdir(exist_ok=True)
    manifest = {"format": FORMAT_VERSION, **header, "recipe": recipe, "runs": []}
    _write_json_atomic(path, manifest)
    return manifest


def append_run(out: str | os.PathLike, run: dict) -> dict:
    """Append a run record to the manifest (atomically) and return the manifest."""
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.setdefault("runs", []).append(json.loads(json.dumps(run, default=str)))
    _write_json_atomic(path, manifest)
    return manifest


def update_run(out: str | os.PathLike, run_index: int, **fields) -> None:
    """Update fields of one run record (e.g. its end time and counts)."""
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["runs"][run_index].update(json.loads(json.dumps(fields, default=str)))
    _write_json_atomic(path, manifest)
