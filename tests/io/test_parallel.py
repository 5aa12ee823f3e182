"""Forked workers: results in order, errors surface, one thread per worker, profile records and
cache entries come back."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from linstab.io.cache import ResultCache
from linstab.io.parallel import can_fork, fork_map
from linstab.io.profile import profiling, timed

needs_fork = pytest.mark.skipif(not can_fork(), reason="fork start method unavailable here")


def _square(k: int) -> int:
    return k * k


def _threads_and_square(k: int) -> tuple[int, int]:
    return torch.get_num_threads(), k * k


def _boom(k: int) -> int:
    if k == 3:
        raise ValueError("item 3 failed")
    return k


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order(workers):
    items = [functools.partial(_square, k) for k in range(7)]
    done = []
    assert fork_map(items, workers, on_done=done.append) == [k * k for k in range(7)]
    assert sorted(done) == list(range(7))


def test_closures_need_no_pickling():
    big = np.arange(10)
    items = [lambda k=k: int(big[k]) + 1 for k in range(5)]  # noqa: E731 - closures on purpose
    assert fork_map(items, 2) == [1, 2, 3, 4, 5]


@needs_fork
def test_workers_run_one_thread():
    res = fork_map([functools.partial(_threads_and_square, k) for k in range(4)], 2)
    assert [r[0] for r in res] == [1, 1, 1, 1]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_surfaces(workers):
    with pytest.raises(ValueError, match="item 3 failed"):
        fork_map([functools.partial(_boom, k) for k in range(6)], workers)


def test_bad_workers():
    with pytest.raises(ValueError, match="workers"):
        fork_map([], -1)
    with pytest.raises(ValueError, match="workers"):
        fork_map([], 1.5)


def _timed_item(k: int) -> int:
    with timed("spectrum", route=f"r{k}"):
        return k


@needs_fork
def test_worker_profile_records_come_back():
    with profiling() as prof:
        fork_map([functools.partial(_timed_item, k) for k in range(3)], 2)
    recs = [r for r in prof.records if r.category == "spectrum"]
    assert sorted(r.labels["route"] for r in recs) == ["r0", "r1", "r2"]
    assert all(r.labels["worker"] for r in recs)


def _entry(k: int):
    return {"x": np.full(3, float(k))}, {"k": k}


@pytest.mark.parametrize("workers", [1, 2])
def test_get_or_compute_many_counts_hits_and_misses(tmp_path, workers):
    cache = ResultCache(tmp_path)
    items = [("t", {"k": k}, functools.partial(_entry, k)) for k in range(5)]
    got = cache.get_or_compute_many(items[:3], workers)
    assert (cache.hits, cache.misses) == (0, 3)
    assert [m["k"] for _, m in got] == [0, 1, 2]
    ticks = []
    got = cache.get_or_compute_many(items, workers, on_done=lambda: ticks.append(1))
    assert (cache.hits, cache.misses) == (3, 5) and len(ticks) == 5
    assert [float(a["x"][0]) for a, _ in got] == [0, 1, 2, 3, 4]
    again = ResultCache(tmp_path)
    again.get_or_compute_many(items, workers)
    assert (again.hits, again.misses) == (5, 0)


def test_disabled_cache_computes_every_time(tmp_path):
    cache = ResultCache(tmp_path, enabled=False)
    items = [("t", {"k": k}, functools.partial(_entry, k)) for k in range(3)]
    cache.get_or_compute_many(items, 2)
    cache.get_or_compute_many(items, 2)
    assert (cache.hits, cache.misses) == (0, 6)
    assert not any(tmp_path.iterdir())


def test_a_prefetch_counts_misses_only(tmp_path):
    cache = ResultCache(tmp_path)
    items = [("t", {"k": k}, functools.partial(_entry, k)) for k in range(3)]
    cache.get_or_compute_many(items[:1], 1)
    cache.get_or_compute_many(items, 2, count_hits=False)
    assert (cache.hits, cache.misses) == (0, 3)
    for kind, parts, compute in items:
        cache.get_or_compute(kind, parts, compute)
    assert (cache.hits, cache.misses) == (3, 3)
