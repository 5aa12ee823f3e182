"""The result cache: keys, atomic writes, corrupt entries, disabled mode."""

from __future__ import annotations

import os

import numpy as np
import torch

from linstab.io.cache import ResultCache, tensor_hash


def test_roundtrip_and_hits(tmp_path):
    c = ResultCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"s": np.arange(5.0)}, {"seconds": 1.5}

    parts = {"model": "abc", "image": "h1", "op": "unit 1.5", "dtype": "float64"}
    a, m = c.get_or_compute("spectrum", parts, compute)
    b, m2 = c.get_or_compute("spectrum", parts, compute)
    assert len(calls) == 1 and c.hits == 1 and c.misses == 1
    assert np.array_equal(a["s"], b["s"]) and m2["seconds"] == 1.5
    assert m2["parts"] == parts
    # another key part -> another entry
    c.get_or_compute("spectrum", {**parts, "dtype": "float32"}, compute)
    assert len(calls) == 2


def test_corrupt_entry_is_recomputed(tmp_path):
    c = ResultCache(tmp_path)
    parts = {"x": 1}
    c.store("k", parts, {"a": np.ones(3)})
    p = c.path("k", parts)
    p.write_bytes(b"not a zip")  # e.g. a file truncated by an earlier, non-atomic writer
    assert c.load("k", parts) is None
    out, _ = c.get_or_compute("k", parts, lambda: ({"a": np.zeros(2)}, {}))
    assert np.array_equal(out["a"], np.zeros(2))


def test_failed_write_leaves_no_entry(tmp_path):
    c = ResultCache(tmp_path)

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("killed mid-write")

    try:
        c.store("k", {"y": 2}, {"a": Boom()})
    except RuntimeError:
        pass
    assert c.load("k", {"y": 2}) is None
    assert os.listdir(tmp_path / "k") == []  # no entry, no temporary file


def test_a_killed_writers_temporary_file_is_removed_when_the_entry_is_stored(tmp_path):
    import subprocess
    import sys

    c = ResultCache(tmp_path)
    entry = c.path("k", {"y": 3})
    entry.parent.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(done.stdout)  # a process that has ended
    stale = entry.with_name(f".{entry.name}.{dead}.1.tmp")
    live = entry.with_name(f".{entry.name}.{os.getpid()}.2.tmp")  # a running writer's: kept
    other = entry.with_name(f".other.npz.{dead}.3.tmp")  # another entry's: left for its own store
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    c.store("k", {"y": 3}, {"a": np.ones(2)})
    assert not stale.exists() and live.exists() and other.exists()
    assert np.array_equal(c.load("k", {"y": 3})[0]["a"], np.ones(2))


def test_disabled_cache_writes_nothing(tmp_path):
    c = ResultCache(tmp_path / "c", enabled=False)
    out, _ = c.get_or_compute("k", {"z": 3}, lambda: ({"a": np.ones(1)}, {}))
    assert out["a"][0] == 1 and not (tmp_path / "c").exists()


def test_tensor_hash():
    x = torch.arange(6.0).reshape(2, 3)
    assert tensor_hash(x) == tensor_hash(x.clone())
    assert tensor_hash(x) != tensor_hash(x.double())
    assert tensor_hash(x) != tensor_hash(x.reshape(3, 2))


def test_truncated_damaged_or_foreign_entries_are_recomputed(tmp_path):
    """A truncated entry (a copy cut short, a full disk) raised ``BadZipFile``/``EOFError`` from
    the lookup instead of being recomputed; an entry whose metadata belongs to other parts (a
    file copied under another name) was returned as if it were this one's."""
    c = ResultCache(tmp_path)
    parts = {"x": 1}
    c.store("k", parts, {"a": np.arange(100.0)}, {"m": 1})
    p = c.path("k", parts)
    raw = p.read_bytes()
    flipped = bytearray(raw)
    flipped[raw.index(b"NUMPY") + 40] ^= 0xFF  # inside the first array: a bad CRC
    other = tmp_path / "other.npz"
    c.store("k", {"x": 2}, {"a": np.zeros(3)})
    c.path("k", {"x": 2}).replace(other)
    for data in (raw[: len(raw) // 2], raw[:-5], b"", b"PK\x03\x04", bytes(flipped), other.read_bytes()):
        p.write_bytes(data)
        assert c.load("k", parts) is None
        out, meta = c.get_or_compute("k", parts, lambda: ({"a": np.ones(2)}, {"m": 2}))
        assert np.array_equal(out["a"], np.ones(2)) and meta["m"] == 2
        assert c.load("k", parts)[1]["m"] == 2  # stored again, whole
    for meta in ("[1, 2]", "5", '"text"'):  # metadata that is no JSON object
        np.savez(p, __meta__=np.array(meta), a=np.ones(2))
        assert c.load("k", parts) is None
