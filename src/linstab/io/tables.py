"""CSV tables: the one writer and reader of linstab's row-per-record outputs."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def _cell(v: object, empty_nan: bool, float_format: str | None) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        if empty_nan and math.isnan(v):
            return ""
        if float_format is not None:
            return format(v, float_format)
    return v


def write_csv(
    rows: Iterable[Mapping[str, object]],
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    *,
    empty_nan: bool = False,
    float_format: str | None = None,
) -> Path:
    """Write dict rows as a CSV file (parent folders are created).

    Args:
        rows: one mapping per row.
        path: the file to write.
        columns: the header, in order (default: every key, in first-seen order). Keys a row
            lacks are written as empty fields; keys outside ``columns`` are an error.
        empty_nan: write NaN floats as empty fields (else as ``nan``).
        float_format: format spec for floats (e.g. ``".6g"``; default ``str``).

    Returns:
        The path written. With no rows and no ``columns`` the file is empty.
    """
    rows = list(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        keys: list[str] = []
        for r in rows:
            keys.extend(k for k in r if k not in keys)
    else:
        keys = list(columns)
    if not keys:
        path.write_text("")
        return path
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v, empty_nan, float_format) for k, v in r.items()})
    return path


def read_csv(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Read a CSV file into one dict of strings per row.

    Args:
        path: the file.
        required: columns the file must have.

    Raises:
        ValueError: when a required column is missing, a row has more or fewer fields than the
            header (a truncated or hand-edited file; the line is named), or the file is not UTF-8
            text (a UTF-8 byte-order mark, as spreadsheets write it, is fine).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise ValueError(f"{path}: missing columns {missing[:4]}{'...' if len(missing) > 4 else ''}")
            rows = []
            for row in reader:
                if None in row or None in row.values():
                    n = len(header) + len(row.get(None, ())) - sum(v is None for v in row.values())
                    raise ValueError(
                        f"{path}, line {reader.line_num}: {n} fields, the header has {len(header)} "
                        "(a truncated or damaged file?)"
                    )
                rows.append(row)
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a CSV text file ({exc})") from None
