"""``skip_unchanged``: a figure is drawn again only when its inputs change (canonical hashing of
numbers, arrays, records and nested containers)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from linstab.plots import _feed as feed
from linstab.plots import skip_unchanged


def key(obj) -> str:
    h = hashlib.sha256()
    feed(h, obj)
    return h.hexdigest()


def rows(n: int = 50) -> list[dict]:
    return [
        {"image": f"img{i}", "unit": f"1.{i % 9}", "growth": 1.0 + i / 7, "ok": i % 2 == 0} for i in range(n)
    ]


def test_equal_values_hash_alike_across_types():
    assert key([1, 2.0, np.float32(3.0)]) == key(np.array([1.0, 2.0, 3.0]).tolist())
    assert key({"a": 1}) == key({"a": np.float64(1.0)})
    assert key(torch.tensor([1.0, 2.0])) == key(np.array([1, 2]))
    assert key([True, 1]) != key([1, 1])  # booleans are not numbers here
    assert key([1, 2]) != key([2, 1]) and key([1]) != key([1, 1])
    assert key(["a", "b"]) == key(("a", "b")) and key(["a", "b"]) != key(["a,b"]) != key(["a", "b", ""])
    assert key(["1"]) != key([1])


def test_records_hash_by_content_and_order():
    r = rows()
    assert key(r) == key([dict(reversed(list(x.items()))) for x in r])  # key order inside a row
    changed = rows()
    changed[17]["growth"] += 1e-9
    assert key(changed) != key(r)
    swapped = rows()
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert key(swapped) != key(r)
    ragged = rows()
    ragged[5]["extra"] = 1
    assert key(ragged) != key(r)
    assert key(r[:49]) != key(r)


@pytest.mark.parametrize("change", [False, True])
def test_a_figure_is_drawn_again_only_when_its_inputs_change(tmp_path, change):
    calls = []

    @skip_unchanged
    def draw(data, out, title="t"):
        calls.append(1)
        p = out.with_suffix(".png")
        p.write_text(str(len(data)))
        return [p]

    r = rows()
    first = draw(r, tmp_path / "fig")
    r2 = rows()
    if change:
        r2[0]["growth"] = -1.0
    second = draw(r2, tmp_path / "fig")
    assert first == second and len(calls) == (2 if change else 1)
    draw(r2, tmp_path / "fig", title="other")  # another argument: drawn
    assert len(calls) == (3 if change else 2)
    first[0].unlink()  # a missing file: drawn again
    draw(r2, tmp_path / "fig", title="other")
    assert len(calls) == (4 if change else 3)


def test_an_unchanged_figure_of_an_earlier_folder_is_taken_over(tmp_path):
    from linstab.plots import reuse_unchanged

    calls = []

    @skip_unchanged
    def draw(data, out):
        calls.append(1)
        paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{p.suffix} {len(data)} {len(calls)}")
        return paths

    prev, cur = tmp_path / "report", tmp_path / ".report-partial"
    first = draw(rows(), prev / "figures" / "fig")
    with reuse_unchanged(prev, cur):
        got = draw(rows(), cur / "figures" / "fig")
        assert len(calls) == 1  # taken over, not drawn
        assert got == [cur / "figures" / "fig.png", cur / "figures" / "fig.svg"]
        assert [p.read_text() for p in got] == [p.read_text() for p in first]
        assert draw(rows(), cur / "figures" / "fig") == got and len(calls) == 1  # now recorded beside it
        changed = rows()
        changed[0]["growth"] = 0.0
        draw(changed, cur / "figures" / "fig2")  # no earlier figure of that name: drawn
        assert len(calls) == 2
        draw(changed, cur / "figures" / "other" / "fig")  # another relative place: drawn
        assert len(calls) == 3
        draw(rows(), tmp_path / "elsewhere" / "fig")  # outside the current folder: drawn
        assert len(calls) == 4
    for p in first:  # the earlier folder can go; the taken-over files stay
        p.unlink()
    assert all(p.is_file() for p in got)
    with reuse_unchanged(prev, tmp_path / "third"):
        draw(rows(), tmp_path / "third" / "figures" / "fig")  # the earlier files are gone: drawn
    assert len(calls) == 5
