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

:func:`fork_start` runs one callable in a forked background process while the caller goes on
(e.g. a report's attacks beside its spectra); :meth:`Background.wait` collects its result.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import torch
from threadpoolctl import threadpool_limits

from .profile import active, profiling, record
from .validate import check_int

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


def _die_with_parent(parent: int) -> None:
    """Linux: have this worker sent SIGTERM when its parent ends, also when the parent is killed
    without running any cleanup (SIGKILL, or SIGTERM outside the ``linstab`` command): a worker
    would otherwise wait forever for items, or compute a result no one collects.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux, or no prctl: best effort
        return
    if os.getppid() != parent:  # the parent ended before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(parent: int | None = None) -> None:
    # a worker ends on SIGTERM (terminate, Background.cancel), whatever the parent's handler
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is not None:
        _die_with_parent(parent)
    torch.set_num_threads(1)
    os.environ["LINSTAB_BLAS_THREADS"] = "1"
    # NumPy/SciPy's own BLAS (OpenBLAS) too: with a thread per core in every worker, SciPy's small
    # LAPACK problems (SLQ's tridiagonal eigenproblems) ran at half speed beside other workers
    threadpool_limits(1)


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
        ChildProcessError: a worker process died without a result (killed, e.g. by the
            out-of-memory killer); the items finished before are not lost (their ``on_done``
            has run), the others are stopped.
        Exception: the first exception an item raised (the other workers are stopped).
    """
    global _ITEMS, _PROFILING
    check_int("workers", workers, 0)
    items = list(items)
    out: list = [None] * len(items)
    if workers <= 1 or len(items) <= 1 or not can_fork():
        for k, f in enumerate(items):
            out[k] = f()
            if on_done is not None:
                on_done(k)
        return out
    _ITEMS, _PROFILING = items, active()
    # an executor, not a Pool: a Pool waits forever for the item of a worker that was killed
    pool = ProcessPoolExecutor(
        min(workers, len(items)),
        mp_context=mp.get_context("fork"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    finished = False
    try:
        futures = [pool.submit(_call, k) for k in range(len(items))]
        n_done = 0
        for fut in as_completed(futures):
            try:
                k, val, recs = fut.result()
            except BrokenProcessPool:
                raise ChildProcessError(
                    f"a worker process died without its result (killed, or out of memory?) after "
                    f"{n_done} of {len(items)} items: run again (finished work that was cached is kept), "
                    "with fewer workers if memory ran out"
                ) from None
            out[k] = val
            n_done += 1
            for cat, sec, parts, labels in recs:
                record(cat, sec, parts, **{**labels, "worker": True})
            if on_done is not None:
                on_done(k)
        finished = True
    finally:
        _ITEMS, _PROFILING = (), False
        if not finished:  # an error or an interrupt: stop the items still running
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
    return out


class Background:
    """A callable running in a forked background process (:func:`fork_start`).

    Attributes:
        done: whether :meth:`wait` has returned.
    """

    def __init__(self, fn: Callable, process=None, conn=None) -> None:
        self._fn, self._process, self._conn = fn, process, conn
        self.done = False
        self._value = None

    def wait(self):
        """The callable's result: joins the process (or, where none could be forked, calls it
        here). The process's profile records join the caller's profile (labelled ``worker``).

        Returns:
            what the callable returned; ``None`` (with a warning) when the process died without
            a result, so that the caller can compute it itself.

        Raises:
            Exception: the exception the callable raised, with its traceback in the message.
        """
        if self.done:
            return self._value
        self.done = True
        if self._process is None:
            self._value = self._fn()
            return self._value
        try:
            msg = self._conn.recv()
        except EOFError:
            msg = None
        self._process.join()
        self._conn.close()
        if msg is None:
            warnings.warn(
                f"a background process ended without a result (exit code {self._process.exitcode}); "
                "its work is done here instead",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        ok, value, recs = msg
        for cat, sec, parts, labels in recs:
            record(cat, sec, parts, **{**labels, "worker": True})
        if not ok:
            exc, tb = value
            text = f"{exc} (in a background process)\n{tb}"
            try:
                again = type(exc)(text)
            except Exception:  # noqa: BLE001 - an exception type with other arguments
                again = RuntimeError(text)
            raise again from exc
        self._value = value
        return value

    def cancel(self) -> None:
        """Stop the process (its result is lost)."""
        if self._process is not None and not self.done:
            self._process.terminate()
            self._process.join()
            self._conn.close()
        self.done = True


def _background_main(fn: Callable, conn, profiling_on: bool, parent: int) -> None:
    _init_worker(parent)
    recs: list = []
    try:
        if profiling_on:
            with profiling() as prof:
                value = fn()
            recs = [(r.category, r.seconds, r.parts, r.labels) for r in prof.records if not r.nested]
        else:
            value = fn()
        conn.send((True, value, recs))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
        try:
            conn.send((False, (exc, traceback.format_exc()), recs))
        except Exception:  # noqa: BLE001 - an unpicklable exception: send its text
            conn.send((False, (RuntimeError(repr(exc)), traceback.format_exc()), recs))
    finally:
        conn.close()


def fork_start(fn: Callable, enabled: bool = True) -> Background:
    """Start ``fn()`` in a forked process with one torch thread; :meth:`Background.wait` returns
    its (picklable) result.

    Where :func:`can_fork` is false, or with ``enabled=False``, nothing starts and ``wait``
    calls ``fn`` in the caller. The process is a daemon: it ends with the caller.
    """
    if not enabled or not can_fork():
        return Background(fn)
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_background_main, args=(fn, send, active(), os.getpid()), daemon=True)
    proc.start()
    send.close()
    return Background(fn, proc, recv)
