"""A result cache for long computations: atomic, content-keyed, safe to kill at any point.

Entries are ``.npz`` files of named NumPy arrays plus a JSON metadata string, stored under
``root/<kind>/<key>.npz``. The key is the SHA-256 of the canonical JSON of the parts that
determine the result (model SHA-256, image hash, operator, method, dtype, ...) and the linstab
version. Writes go to a temporary file in the same folder, then ``os.replace``: a run killed at
any point leaves either no entry or a complete one, never a corrupt one. Unreadable entries are
treated as missing and recomputed.

:func:`cache_root` is linstab's one cache folder (weights, decoded data sets and results
live below it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from .parallel import fork_map, fork_start
from .processes import clean_stale_tmp, tmp_path
from .profile import timed


def cache_root() -> Path:
    """Linstab's cache folder: ``$LINSTAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/linstab`` or
    ``~/.cache/linstab``.
    """
    env = os.environ.get("LINSTAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "linstab"


def tensor_hash(x: torch.Tensor | np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of an array's dtype, shape and bytes."""
    a = x.detach().cpu().contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
    h = hashlib.sha256()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def _canonical(parts) -> str:
    """The JSON text of ``parts`` that :meth:`ResultCache.key` hashes and by which stored parts
    are compared with asked ones.
    """
    return json.dumps(parts, sort_keys=True, default=str)


def default_cache_dir() -> Path:
    """``$LINSTAB_CACHE_DIR/results`` or ``~/.cache/linstab/results``."""
    return cache_root() / "results"


class ResultCache:
    """Content-keyed store of array results.

    Args:
        root: cache folder (default :func:`default_cache_dir`).
        enabled: when False, every lookup computes and nothing is written.

    Attributes:
        hits: number of lookups answered from disk.
        misses: number of entries computed.
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._prefetched: set[str] = set()  # keys a prefetch computed: their next lookup is no hit

    @staticmethod
    def key(parts: dict) -> str:
        """The entry key of a dict of JSON-able parts (the linstab version is added)."""
        return hashlib.sha256(_canonical({"linstab": __version__, **parts}).encode()).hexdigest()[:32]

    def path(self, kind: str, parts: dict) -> Path:
        """The file of the entry for ``parts`` under ``root/kind/``."""
        return self.root / kind / f"{self.key(parts)}.npz"

    def load(self, kind: str, parts: dict) -> tuple[dict[str, np.ndarray], dict] | None:
        """The stored ``(arrays, meta)`` or ``None`` when absent or unreadable: truncated or
        damaged (not a zip file, a bad CRC, a bad array header), with metadata that is not a
        JSON object, or made for other ``parts`` (a file copied under another name).
        """
        if not self.enabled:
            return None
        p = self.path(kind, parts)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
                meta = json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}
        except Exception:  # noqa: BLE001 - zipfile.BadZipFile, EOFError, zlib.error, ...: recomputed
            return None
        if not isinstance(meta, dict) or ("parts" in meta and _canonical(meta["parts"]) != _canonical(parts)):
            return None
        return arrays, meta

    def store(
        self, kind: str, parts: dict, arrays: dict[str, np.ndarray], meta: dict | None = None
    ) -> Path | None:
        """Write an entry atomically (a temporary file named after this process, then a rename).

        A temporary file of the same entry left by a process that is gone (killed while writing)
        is removed first; those of running processes stay.
        """
        if not self.enabled:
            return None
        p = self.path(kind, parts)
        clean_stale_tmp(p)
        tmp = tmp_path(p)
        try:
            with open(tmp, "xb") as f:
                np.savez(
                    f,
                    __meta__=np.array(json.dumps({"parts": parts, **(meta or {})}, default=str)),
                    **{k: np.asarray(v) for k, v in arrays.items()},
                )
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return p

    def prefetch(
        self,
        items: Sequence[tuple[str, dict, Callable[[], tuple[dict[str, np.ndarray], dict]]]],
        background: bool = True,
    ) -> CachePrefetch:
        """Compute and store the missing ``(kind, parts, compute)`` items in one forked
        background process (one thread; :func:`~linstab.io.parallel.fork_start`) while the
        caller goes on; each is stored as soon as it is done. ``wait()`` on the result before
        looking the items up (:meth:`get_or_compute`); they count as misses, not hits. Where no
        process can be forked, or with ``background=False``, ``wait()`` computes them.
        """
        if not self.enabled:
            return CachePrefetch(self, [], None)
        # entries already there are not read here: their lookup reads them (an unreadable one is
        # then computed in line)
        todo = [(kind, parts, fn) for kind, parts, fn in items if not self.path(kind, parts).is_file()]
        if not todo:
            return CachePrefetch(self, [], None)

        def job() -> list[str]:
            stored = []
            for kind, parts, compute in todo:
                arrays, meta = compute()
                with timed("cache-write", kind=kind):
                    self.store(kind, parts, arrays, meta)
                stored.append(self.key(parts))
            return stored

        return CachePrefetch(self, [self.key(p) for _, p, _ in todo], fork_start(job, enabled=background))

    def get_or_compute(
        self,
        kind: str,
        parts: dict,
        compute: Callable[[], tuple[dict[str, np.ndarray], dict]],
    ) -> tuple[dict[str, np.ndarray], dict]:
        """Return the stored result for ``parts`` or compute, store and return it.

        Args:
            kind: a folder name for this kind of result (``"spectrum"``, ``"bands"``, ...).
            parts: what determines the result.
            compute: returns ``(arrays, meta)``.
        """
        return self.get_or_compute_many([(kind, parts, compute)])[0]

    def get_or_compute_many(
        self,
        items: Sequence[tuple[str, dict, Callable[[], tuple[dict[str, np.ndarray], dict]]]],
        workers: int = 1,
        on_done: Callable[[], None] | None = None,
        count_hits: bool = True,
    ) -> list[tuple[dict[str, np.ndarray], dict]]:
        """:meth:`get_or_compute` of many ``(kind, parts, compute)`` items, the missing ones
        computed by ``workers`` forked processes (:func:`~linstab.io.parallel.fork_map`); each
        result is stored as soon as it is computed, so an interrupted call loses only the items
        in flight.

        Args:
            items: ``(kind, parts, compute)`` triples; put the costliest first (workers take
                items in order, so that long items do not start last).
            workers: worker processes (1: compute here, in order).
            on_done: called once per item, as it is found or finished (progress).
            count_hits: count the items found as hits (``False`` for a prefetch whose items are
                looked up again later; the first lookup of an item computed here is then no hit
                either, so that a cold run counts no hits however its work was scheduled).

        Returns:
            ``(arrays, meta)`` per item, in order.
        """
        out: list = [None] * len(items)
        todo = []
        for k, (kind, parts, _) in enumerate(items):
            with timed("cache-read", kind=kind):
                got = self.load(kind, parts)
            if got is None:
                todo.append(k)
                continue
            key = self.key(parts)
            if key in self._prefetched:
                self._prefetched.discard(key)  # computed by a prefetch: counted as a miss there
            else:
                self.hits += count_hits
            out[k] = got
            if on_done is not None:
                on_done()

        def job(k: int):
            kind, parts, compute = items[k]
            arrays, meta = compute()
            with timed("cache-write", kind=kind):
                self.store(kind, parts, arrays, meta)
            return arrays, meta

        def done(_: int) -> None:
            if on_done is not None:
                on_done()

        results = fork_map([functools.partial(job, k) for k in todo], workers, on_done=done)
        self.misses += len(todo)
        if not count_hits:  # a prefetch: the lookup that follows is no hit
            self._prefetched.update(self.key(items[k][1]) for k in todo)
        for k, res in zip(todo, results, strict=True):
            out[k] = res
        return out


class CachePrefetch:
    """Cache entries being computed in a background process (:meth:`ResultCache.prefetch`)."""

    def __init__(self, cache: ResultCache, keys: list[str], handle) -> None:
        self.cache, self.keys, self.handle = cache, keys, handle

    def wait(self) -> None:
        """Wait for the entries; count them as misses. Entries the process did not store (it
        died) are computed by the next lookup instead.
        """
        if self.handle is None or self.handle.done:
            return
        stored = self.handle.wait()
        if stored:
            self.cache.misses += len(stored)
            self.cache._prefetched.update(stored)

    def cancel(self) -> None:
        """Stop the background process if it still runs (entries it stored stay stored)."""
        if self.handle is not None:
            self.handle.cancel()
