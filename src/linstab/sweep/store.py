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

A task file damaged afterwards (truncated by a full disk or an interrupted copy) is not done: a
run moves it to ``DIR/unreadable/`` and runs its task again (:func:`set_aside_unreadable`);
:func:`read_rows` refuses it, and any ``.parquet`` file in ``DIR/rows`` that is not a task file
of a sweep (another name or another schema), naming the file.
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

from .tasks import ANALYSES, COLUMNS

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
    "canonical_recipe",
    "is_task_file_name",
    "task_file_problem",
    "set_aside_unreadable",
]

MANIFEST = "manifest.json"
ROWS = "rows"
UNREADABLE = "unreadable"
FORMAT_VERSION = 1

# the names task_file_name gives: a safe prefix (never starting with "." or "_"), "-", 10 hex digits
_TASK_FILE = re.compile(r"[A-Za-z0-9-][A-Za-z0-9._-]*-[0-9a-f]{10}\.parquet")

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


def is_task_file_name(name: str) -> bool:
    """Whether ``name`` has the form of a task file name (:func:`task_file_name`)."""
    return _TASK_FILE.fullmatch(name) is not None


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (Arrow's messages hold newlines)."""
    return " ".join(str(exc).split())


def task_file_problem(path: str | os.PathLike, *, full: bool = False) -> str | None:
    """Why a ``.parquet`` file under ``DIR/rows`` is not a readable task file (``None``: it is one).

    The name must be a task file name (:func:`task_file_name`) and the schema that of
    :data:`SCHEMA` (same columns, same types, same order).

    Args:
        path: the file.
        full: also decode every row (damage inside the data pages, which the footer does not
            show); otherwise the footer only is read.
    """
    path = Path(path)
    if not is_task_file_name(path.name):
        return "is not a task file of a sweep (task files are named <task>-<10 hex digits>.parquet)"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        return f"cannot be read (truncated or corrupt: {_one_line(exc)})"
    got = {f.name: f.type for f in schema}
    want = {f.name: f.type for f in SCHEMA}
    if got == want and list(got) == list(want):
        if full:
            try:
                pq.read_table(path)
            except (pa.ArrowException, OSError) as exc:
                return f"cannot be read (corrupt: {_one_line(exc)})"
        return None
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    retyped = [f"{c} ({got[c]}, expected {want[c]})" for c in want if c in got and got[c] != want[c]]
    parts = [
        f"{label} {', '.join(cols[:5])}{' ...' if len(cols) > 5 else ''}"
        for label, cols in (("missing columns", missing), ("extra columns", extra), ("other types", retyped))
        if cols
    ]
    return "has another schema than a sweep's task files (" + ("; ".join(parts) or "column order") + ")"


def set_aside_unreadable(out: str | os.PathLike) -> list[tuple[str, str, Path]]:
    """Move task files that cannot be read (or have another schema) to ``DIR/unreadable/``.

    Every task file is read whole (:func:`task_file_problem` with ``full``): a file damaged inside
    its data pages would otherwise count as done, and only :func:`read_rows` would find it. Their
    tasks are then not done, so the run that calls this runs them again. Files whose name is not a
    task file name are left alone (they never count as done).

    Returns:
        ``(file name, problem, new path)`` per file moved.
    """
    rows_dir = Path(out) / ROWS
    moved = []
    for name in sorted(done_tasks(out)):
        if not is_task_file_name(name):
            continue
        problem = task_file_problem(rows_dir / name, full=True)
        if problem is None:
            continue
        dest_dir = Path(out) / UNREADABLE
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / name
        if dest.exists():
            dest = dest_dir / f"{Path(name).stem}-{uuid.uuid4().hex[:8]}.parquet"
        os.replace(rows_dir / name, dest)
        moved.append((name, problem, dest))
    return moved


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
    """File names of written tasks holding at least one error row (task files only).

    Raises:
        ValueError: when a task file cannot be read (run :func:`set_aside_unreadable` first).
    """
    rows_dir = Path(out) / ROWS
    bad = set()
    for name in done_tasks(out):
        if not is_task_file_name(name):
            continue
        problem = task_file_problem(rows_dir / name)
        if problem is not None:
            raise ValueError(f"{rows_dir / name} {problem}")
        status = pq.read_table(rows_dir / name, columns=["status"]).column("status").to_pylist()
        if "error" in status:
            bad.add(name)
    return bad


_REDO = "run the sweep command again to redo its task (the run moves the file to {out}/unreadable/)"


def read_rows(out: str | os.PathLike, columns: list[str] | None = None, filter=None) -> pa.Table:
    """All rows of a sweep directory as one Arrow table (empty table when nothing is written).

    Only the ``.parquet`` files of ``DIR/rows`` are read (names starting with ``.`` are
    temporaries); each must be a task file of the sweep (:func:`task_file_problem`).

    Args:
        out: the sweep directory.
        columns: a subset of columns.
        filter: a :mod:`pyarrow.compute` expression, e.g. ``pc.field("analysis") == "bands"``.

    Raises:
        ValueError: a ``.parquet`` file in ``DIR/rows`` that is not a task file (another name or
            schema) or that cannot be read (truncated, corrupt), the message naming the file; or
            ``DIR/rows`` that is a file.
    """
    rows_dir = Path(out) / ROWS
    _check_rows_dir(out)
    names = sorted(done_tasks(out))
    if not rows_dir.is_dir() or not names:
        return SCHEMA.empty_table().select(columns) if columns else SCHEMA.empty_table()
    paths = [rows_dir / n for n in names]
    problems = [(p, why) for p in paths if (why := task_file_problem(p)) is not None]
    if problems:
        _refuse(out, problems)
    dataset = ds.dataset([str(p) for p in paths], format="parquet", schema=SCHEMA)
    try:
        return dataset.to_table(columns=columns, filter=filter)
    except (pa.ArrowException, OSError) as exc:  # damage the footer does not show: find the file
        for p in paths:
            try:
                pq.read_table(p)
            except (pa.ArrowException, OSError) as file_exc:
                _refuse(out, [(p, f"cannot be read (corrupt: {file_exc})")])
        raise ValueError(f"cannot read the rows of {out}: {exc}") from exc


def _refuse(out, problems: list[tuple[Path, str]]) -> None:
    lines = [f"{p} {why}" for p, why in problems[:10]]
    if len(problems) > 10:
        lines.append(f"... and {len(problems) - 10} more")
    advice = []
    if any(is_task_file_name(p.name) and "cannot be read" in why for p, why in problems):
        advice.append(_REDO.format(out=out))
    if any(not is_task_file_name(p.name) or "schema" in why for p, why in problems):
        advice.append(f"move files that are not the sweep's out of {Path(out) / ROWS}")
    raise ValueError(
        f"{out} holds {len(problems)} Parquet file(s) that are not readable task files of the sweep:\n  "
        + "\n  ".join(lines)
        + "\n"
        + "; ".join(advice)
    )


def _check_rows_dir(out: str | os.PathLike) -> None:
    """``DIR/rows`` must be a folder where it exists (a file there would hide every task file)."""
    rows_dir = Path(out) / ROWS
    if rows_dir.exists() and not rows_dir.is_dir():
        raise ValueError(f"{rows_dir} is not a folder: a sweep keeps its task files there; move it away")


def read_manifest(out: str | os.PathLike) -> dict:
    """The manifest of a sweep directory, its format checked.

    Raises:
        FileNotFoundError: when ``out`` holds no manifest.
        ValueError: a manifest that is not a JSON object, or of another format than
            :data:`FORMAT_VERSION` (written by another linstab version).
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a sweep directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): not a sweep manifest or a damaged one") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object (a sweep manifest), got {type(manifest).__name__}")
    fmt = manifest.get("format")
    if fmt != FORMAT_VERSION or isinstance(fmt, bool):
        version = manifest.get("linstab_version")
        raise ValueError(
            f"{path} has sweep format {fmt!r}; this linstab reads format {FORMAT_VERSION} only"
            + (f" (the directory was written by linstab {version})" if version else "")
        )
    return manifest


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _analysis_order(name) -> tuple[int, str]:
    return (ANALYSES.index(name) if name in ANALYSES else len(ANALYSES), str(name))


def canonical_recipe(recipe: dict) -> dict:
    """A recipe dict in which the order of ``analyses`` (that of :data:`ANALYSES`) and of
    ``attacks`` (sorted) does not matter: what two recipes are compared by.

    The results do not depend on either order (rows are keyed by analysis and perturbation; every
    attack runs with its own seed), so ``bands,topk`` resumes a directory made with ``topk,bands``.
    """
    d = dict(recipe)
    if isinstance(d.get("analyses"), list):
        d["analyses"] = sorted(d["analyses"], key=_analysis_order)
    if isinstance(d.get("attacks"), list):
        d["attacks"] = sorted(d["attacks"], key=str)
    return d


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
        ValueError: when ``out`` is a non-empty directory that is not a sweep directory, a
            sweep directory of another format (:func:`read_manifest`), a manifest without a
            recipe, or ``DIR/rows`` that is a file.
    """
    out = Path(out)
    recipe = json.loads(json.dumps(recipe))
    path = out / MANIFEST
    if path.is_file():
        manifest = read_manifest(out)
        old = manifest.get("recipe")
        if not isinstance(old, dict):
            raise ValueError(
                f"{path} holds no recipe (expected a JSON object under 'recipe', got "
                f"{type(old).__name__}): a damaged manifest; refusing to add results to it"
            )
        _check_rows_dir(out)
        if canonical_recipe(old) != canonical_recipe(recipe):
            diffs = _diff(canonical_recipe(old), canonical_recipe(recipe))
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
