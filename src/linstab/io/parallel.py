"""``fork_map``: independent pieces of work in forked worker processes, one thread each.

On a machine with few cores, per-image work (exact spectra, band counts by inertia) runs
faster as one single-threaded process per core than as one process with several BLAS threads:
sparse factorizations are single-threaded, and dense eigensolvers scale sublinearly with
threads (measured in ``benchmarks/results/report_profile_*.json``). The work items are
zero-argument callables (closures are fine): the workers are forked, so they inherit them and
the loaded models without pickling; only results travel back. Where ``fork`` is unavailable
(Windows, macOS's default), once CUDA is initialized here (models on a GPU), or with one worker,
the items run here, in order.

Workers run with one torch thread (and so one BLAS thread in linstab's kernels). When the
caller is profiling (:mod:`linstab.io.profile`), each worker's records come back into the
caller's profile, labelled with ``worker``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence

import torch

from .profile import active, profiling, record

_ITEMS: Sequence[Callable] = ()  # the current fork_map's items, inherited by its forked workers
_PROFILING = False  # whether the caller of the current fork_map is profiling


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether :func:`fork_map` can use worker processes here: Linux ``fork``, and CUDA not
    initialized in this process (a forked child cannot use it).
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return False
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def _init_worker() -> None:
    torch.set_num_threads(1)
    os.environ["LINSTAB_BLAS_THREADS"] = "1"


def _call(k: int):
    if _PROFILING:
        with profiling() as prof:
            val = _ITEMS[k]()
        return k, val, [(r.category, r.seconds, r.parts, r.labels) for r in prof.records if not r.nested]
    return k, _ITEMS[k](), []


def fork_map(items: Sequence[Callable], workers: int, on_done: Callable[[int], None] | None = None) -> list:
    """``[f() for f in items]``, computed by ``workers`` forked processes.

    Args:
        items: zero-argument callables; their results must be picklable.
        workers: worker processes (``<= 1``: run here, in order).
        on_done: called with the index of every finished item (progress), in finishing order.

    Returns:
        the results, in the order of ``items``.

    Raises:
        ValueError: for a negative or non-integer ``workers``.
        Exception: the first exception an item raised (the other workers are stopped).
    """
    global _ITEMS, _PROFILING
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative int, got {workers!r}")
    items = list(items)
    out: list = [None] * len(items)
    if workers <= 1 or len(items) <= 1 or not can_fork():
        for k, f in enumerate(items):
            out[k] = f()
            if on_done is not None:
                on_done(k)
        return out
    _ITEMS, _PROFILING = items, active()
    try:
        ctx = mp.get_context("fork")
        with ctx.Pool(min(workers, len(items)), initializer=_init_worker) as pool:
            for k, val, recs in pool.imap_unordered(_call, range(len(items))):
                out[k] = val
                for cat, sec, parts, labels in recs:
                    record(cat, sec, parts, **{**labels, "worker": True})
                if on_done is not None:
                    on_done(k)
    finally:
        _ITEMS, _PROFILING = (), False
    return out
