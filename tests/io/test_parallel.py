"""Forked workers: results in order, errors surface, one thread per worker, profile records and
cache entries come back."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from linstab.io.cache import ResultCache
from linstab.io.parallel import can_fork, fork_map, fork_start
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


def _blas_threads() -> list[int]:
    import scipy.linalg  # noqa: F401  (its OpenBLAS too)
    from threadpoolctl import threadpool_info

    return [d["num_threads"] for d in threadpool_info()]


def test_workers_run_numpy_and_scipy_blas_at_one_thread():
    """Not only torch: NumPy/SciPy's OpenBLAS kept a thread per core in every worker."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):  # as outside pytest-xdist (its workers start at one thread)
        assert set(_blas_threads()) == {2}
        res = fork_map([_blas_threads, _blas_threads], 2)
    assert all(r and set(r) == {1} for r in res), res


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_surfaces(workers):
    with pytest.raises(ValueError, match="item 3 failed"):
        fork_map([functools.partial(_boom, k) for k in range(6)], workers)


def test_bad_workers():
    with pytest.raises(ValueError, match="workers"):
        fork_map([], -1)
    with pytest.raises(TypeError, match="workers must be an int >= 0; got float 1.5"):
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
    # the entry cached before the prefetch is a hit; the two it computed were misses there
    assert (cache.hits, cache.misses) == (1, 3)
    for kind, parts, compute in items:
        cache.get_or_compute(kind, parts, compute)
    assert (cache.hits, cache.misses) == (4, 3)


def _pid_threads() -> tuple[int, int]:
    return os.getpid(), torch.get_num_threads()


def _fails():
    raise KeyError("no such thing")


def _dies():
    os._exit(3)


@needs_fork
def test_fork_start_runs_in_another_process_with_one_thread():
    h = fork_start(_pid_threads)
    pid, threads = h.wait()
    assert pid != os.getpid() and threads == 1 and h.done
    assert h.wait() == (pid, threads)  # the result is kept


def test_fork_start_disabled_runs_here_at_wait():
    h = fork_start(_pid_threads, enabled=False)
    assert h.wait()[0] == os.getpid()


@needs_fork
def test_fork_start_error_and_death_surface():
    with pytest.raises(KeyError, match="no such thing"):
        fork_start(_fails).wait()
    with pytest.warns(RuntimeWarning, match="exit code 3"):
        assert fork_start(_dies).wait() is None


@needs_fork
def test_fork_start_profile_records_come_back():
    with profiling() as prof:
        h = fork_start(functools.partial(_timed_item, 7))
        assert h.wait() == 7
    recs = [r for r in prof.records if r.category == "spectrum"]
    assert [r.labels["route"] for r in recs] == ["r7"] and recs[0].labels["worker"]


def _entry_pid(k: int):
    return {"x": np.full(3, float(k))}, {"k": k, "pid": os.getpid()}


def _slow_entry(k: int):
    time.sleep(60)
    return _entry(k)


@pytest.mark.parametrize("background", [True, False])
def test_background_prefetch_stores_entries_and_counts_them_once(tmp_path, background):
    cache = ResultCache(tmp_path)
    items = [("t", {"k": k}, functools.partial(_entry_pid, k)) for k in range(3)]
    cache.get_or_compute_many(items[:1])
    assert (cache.hits, cache.misses) == (0, 1)
    pre = cache.prefetch(items, background=background)
    assert pre.keys == [cache.key({"k": 1}), cache.key({"k": 2})]  # the cached one is not redone
    pre.wait()
    assert (cache.hits, cache.misses) == (0, 3)
    got = [cache.get_or_compute(*it) for it in items]
    assert [m["k"] for _, m in got] == [0, 1, 2]
    assert (cache.hits, cache.misses) == (1, 3)  # prefetched entries are no hits, the old one is
    pids = {m["pid"] for _, m in got[1:]}
    assert (pids != {os.getpid()}) == (background and can_fork())
    for it in items:  # later lookups are ordinary hits
        cache.get_or_compute(*it)
    assert (cache.hits, cache.misses) == (4, 3)


@needs_fork
def test_a_cancelled_prefetch_stores_nothing(tmp_path):
    cache = ResultCache(tmp_path)
    pre = cache.prefetch([("t", {"k": 0}, functools.partial(_slow_entry, 0))])
    pre.cancel()
    pre.wait()
    assert cache.load("t", {"k": 0}) is None and cache.misses == 0


_KILLED_WORKER = """
import os, signal
from linstab.io.parallel import fork_map

def die():
    os.kill(os.getpid(), signal.SIGKILL)

try:
    fork_map([lambda: 1, die, lambda: 3], 2)
except ChildProcessError as exc:
    print("refused:", exc)
"""


@needs_fork
def test_a_killed_worker_is_an_error_not_a_hang():
    """A worker killed mid-item (the out-of-memory killer, a user's ``kill``) left a Pool waiting
    forever for its result: the report hung. Run in a child so that a hang fails the test."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "refused: a worker process died without its result" in res.stdout, res.stdout + res.stderr


_PARENT_KILLED = """
import os, signal, threading, time
from linstab.io.parallel import fork_map, fork_start

def item():
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: lines of several processes do not mix
    time.sleep(300)

def kill_me():
    time.sleep(3)
    os.kill(os.getpid(), signal.SIGKILL)

threading.Thread(target=kill_me, daemon=True).start()
fork_start(item)
fork_map([item] * 4, 2)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@needs_fork
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_workers_end_with_a_killed_parent():
    """A report killed with SIGKILL (or SIGTERM from the Python API: no cleanup runs) left its
    workers and its background process running as orphans, computing results no one collects
    or waiting forever for items."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", _PARENT_KILLED], stdout=subprocess.PIPE, text=True, env=env)
    pids = [int(p.stdout.readline()) for _ in range(3)]  # the background process and two workers
    try:
        p.wait(timeout=120)
        for _ in range(600):  # they end at once; wait up to a minute on a loaded machine
            if not any(_running(pid) for pid in pids):
                break
            time.sleep(0.1)
        assert not [pid for pid in pids if _running(pid)], "orphaned workers still run"
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, 9)
        p.stdout.close()
