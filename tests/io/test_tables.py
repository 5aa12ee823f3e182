"""CSV and Parquet readers (:mod:`linstab.io.tables`, :mod:`linstab.io.parquet`): damaged or odd
files are ``ValueError`` naming the file, never rows with missing or shifted values."""

from __future__ import annotations

import pytest

from linstab.io.parquet import read_parquet_rows
from linstab.io.tables import read_csv, write_csv


def test_rows_round_trip(tmp_path):
    path = write_csv([{"a": 1, "b": float("nan")}, {"a": 2}], tmp_path / "t.csv", empty_nan=True)
    assert read_csv(path, required=("a", "b")) == [{"a": "1", "b": ""}, {"a": "2", "b": ""}]


@pytest.mark.parametrize(
    ("text", "line", "n"),
    [("a,b,c\n1,2,3\n1,2\n", 3, 2), ("a,b,c\n1,2,3,4,5\n", 2, 5)],
)
def test_a_row_of_another_length_is_refused_with_its_line(tmp_path, text, line, n):
    """A short row (a truncated file) gave ``None`` values (``**None**`` verdicts in the findings
    table, ``float(None)`` in readers); a long one lost its extra fields silently."""
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"t\.csv, line {line}: {n} fields, the header has 3"):
        read_csv(path)


def test_a_byte_order_mark_is_read_and_binary_is_refused(tmp_path):
    """A spreadsheet's UTF-8 BOM hid the first column ("missing columns ['section']")."""
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffsection,claim\nA,B\n".encode())
    assert read_csv(path, required=("section",)) == [{"section": "A", "claim": "B"}]
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a CSV text file"):
        read_csv(path)


def test_a_damaged_parquet_file_is_a_value_error_naming_it(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    good = tmp_path / "rows" / "a.parquet"
    good.parent.mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), good)
    assert read_parquet_rows(good.parent, ["x"]) == [{"x": 1}, {"x": 2}]
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(ValueError, match=r"a\.parquet.*not readable as Parquet"):
        read_parquet_rows(good)
    with pytest.raises(ValueError, match="not readable as Parquet"):
        read_parquet_rows(good.parent)
