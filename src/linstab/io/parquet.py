"""Parquet datasets: the one reader of linstab's Parquet inputs (a ``linstab sweep`` folder).

``pyarrow`` is imported when a dataset is read, so linstab works without it until then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def read_parquet_rows(path: str | os.PathLike, columns: Sequence[str] | None = None) -> list[dict]:
    """The rows of a Parquet file or of a folder of Parquet files, as dicts.

    Files whose name starts with ``.`` or ``_`` (temporaries, metadata) are skipped.

    Args:
        path: a ``.parquet`` file or a folder of them.
        columns: the columns to read (all by default).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ImportError: when ``pyarrow`` is not installed (with the command that installs it).
        ValueError: when a requested column is missing (the missing ones are named), or a file
            is not Parquet or is damaged (truncated, ...).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such Parquet file or folder")
    try:
        import pyarrow.dataset as ds
    except ImportError as exc:  # pragma: no cover - pyarrow is installed with the test extras
        raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from exc
    import pyarrow as pa

    try:
        dataset = ds.dataset(str(p), format="parquet")
        names = set(dataset.schema.names)
        missing = [c for c in (columns or ()) if c not in names]
        if missing:
            raise ValueError(f"{p}: missing columns {missing}; it has {sorted(names)}")
        return dataset.to_table(columns=list(columns) if columns else None).to_pylist()
    except (pa.ArrowException, OSError) as exc:  # a damaged, truncated or foreign file
        raise ValueError(f"{p}: not readable as Parquet ({exc})") from None
