"""Figures. Plotting never selects a matplotlib backend: figures are built with
``matplotlib.figure.Figure`` (no pyplot) and always written to a path the caller gives.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .._version import __version__
from ..io.profile import timed

__all__ = ["figure_file", "figure_paths", "reuse_unchanged", "save_figure", "skip_unchanged"]


def _feed(h, obj) -> None:
    """Feed a canonical form of ``obj`` into the hash ``h``: numbers as float64 (``1`` and
    ``np.float32(1.0)`` alike), arrays and tensors by shape and float64 bytes, mappings by
    sorted key, sequences in order, dataclasses by their fields, functions by name; anything else
    by its pickle.
    """
    import dataclasses

    import numpy as np

    if obj is None or isinstance(obj, str | bool):
        h.update(repr(obj).encode())
    elif isinstance(obj, int | float | np.integer | np.floating):
        h.update(b"n" + np.float64(obj).tobytes())
    elif hasattr(obj, "detach") and hasattr(obj, "cpu"):  # a torch tensor
        _feed(h, obj.detach().cpu().numpy())
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj, dtype=np.float64) if obj.dtype.kind in "biuf" else obj
        h.update(b"a" + repr(a.shape).encode() + (a.tobytes() if a.dtype.kind != "O" else pickle.dumps(a)))
    elif isinstance(obj, dict):
        h.update(b"d")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, list | tuple):
        nums = _numbers(obj)
        if nums is not None:  # numbers: one float64 array
            h.update(b"v" + str(len(obj)).encode() + nums.tobytes())
            return
        if obj and all(type(v) is str for v in obj):  # strings: their repr, in one piece
            h.update(b"s" + repr(list(obj)).encode())
            return
        if len(obj) > 1 and all(isinstance(v, dict) for v in obj):
            keys = list(obj[0])
            if all(len(v) == len(keys) and all(k in v for k in keys) for v in obj):
                # records with the same keys (table rows): column by column
                h.update(b"r" + str(len(obj)).encode())
                for k in sorted(keys, key=repr):
                    _feed(h, k)
                    _feed(h, [v[k] for v in obj])
                return
        h.update(b"l" + str(len(obj)).encode())
        for v in obj:
            _feed(h, v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, (type(obj).__qualname__, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}))
    elif callable(obj):
        h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".encode())
    else:
        h.update(pickle.dumps(obj))


def _numbers(seq):
    """``seq`` (a non-empty list or tuple of plain numbers: ints, floats, NumPy scalars, no
    booleans) as a float64 array, else ``None``; NumPy converts in C, the check for booleans
    (which NumPy would take for integers) is a type test per element.
    """
    import numpy as np

    if not seq:
        return None
    try:
        a = np.asarray(seq)
    except (ValueError, TypeError):  # ragged or odd elements
        return None
    if a.ndim != 1 or a.dtype.kind not in "iuf":
        return None
    if any(type(v) is bool or type(v) is np.bool_ for v in seq):
        return None
    return a.astype(np.float64, copy=False)


_REUSE: contextvars.ContextVar[tuple[Path, Path] | None] = contextvars.ContextVar(
    "linstab_reuse", default=None
)


@contextlib.contextmanager
def reuse_unchanged(previous: str | Path, current: str | Path) -> Iterator[None]:
    """Within this block, a figure that :func:`skip_unchanged` would draw under ``current`` is
    taken from the same relative place under ``previous`` when the figure there was drawn from
    the same arguments (its files are hard-linked, or copied across file systems, instead of
    drawn again). Used when a report is built in a fresh folder that replaces an earlier one.

    Args:
        previous: the folder of an earlier run (need not exist).
        current: the folder being written.
    """
    token = _REUSE.set((Path(os.path.abspath(previous)), Path(os.path.abspath(current))))
    try:
        yield
    finally:
        _REUSE.reset(token)


def _sidecar(stem: Path) -> Path:
    return stem.parent / f".{stem.name}.figkey.json"


def _recorded(side: Path, key: str) -> list[Path] | None:
    """The figure files that ``side`` records for ``key`` (beside it), if they all exist."""
    try:
        old = json.loads(side.read_text())
        if old["key"] != key:
            return None
        paths = [side.parent / Path(p).name for p in old["paths"]]  # names; older sidecars: full paths
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return paths if paths and all(p.is_file() for p in paths) else None


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _reused(stem: Path, key: str) -> list[Path] | None:
    """The files of an unchanged figure of the earlier run (:func:`reuse_unchanged`), placed
    beside ``stem``; ``None`` when there is none.
    """
    where = _REUSE.get()
    if where is None:
        return None
    previous, current = where
    try:
        rel = Path(os.path.abspath(stem)).relative_to(current)
    except ValueError:
        return None
    old = _recorded(_sidecar(previous / rel), key)
    if old is None:
        return None
    try:
        new = [stem.parent / p.name for p in old]
        for src, dst in zip(old, new, strict=True):
            _link_or_copy(src, dst)
    except OSError:
        return None
    return new


def _record(side: Path, key: str, paths) -> None:
    side.write_text(json.dumps({"key": key, "paths": [Path(p).name for p in paths]}))


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def _figure_stem(out: str | Path) -> Path:
    """``out`` without its figure suffix (``.png``, ``.svg``, ``.pdf``); any other suffix stays."""
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in FIGURE_SUFFIXES else out


def skip_unchanged(fn: Callable) -> Callable:
    """Decorator for plot functions with an ``out`` argument: when the files a previous call
    wrote for the same ``out`` still exist and every other argument is the same (SHA-256 of
    their pickle, with the function, linstab and matplotlib versions), return their paths
    without drawing again (values equal as float64 count as the same, so results read back from
    the cache match freshly computed ones). A hidden ``.<name>.figkey.json`` beside the figure
    records the key and the file names. Inside :func:`reuse_unchanged`, an unchanged figure of
    the earlier folder is taken over instead of drawn. Arguments that cannot be hashed
    (:func:`_feed`) always draw.
    """
    sig = inspect.signature(fn)
    if "out" not in sig.parameters:
        raise TypeError(f"skip_unchanged needs a function with an 'out' argument, got {fn.__qualname__}")

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        stem = _figure_stem(bound.arguments["out"])
        side = _sidecar(stem)
        try:
            import matplotlib

            h = hashlib.sha256()
            what = (fn.__module__, fn.__qualname__, __version__, matplotlib.__version__)
            _feed(h, (what, {k: v for k, v in bound.arguments.items() if k != "out"}))
            key = h.hexdigest()
        except (pickle.PicklingError, TypeError, AttributeError):
            return fn(*args, **kwargs)
        paths = _recorded(side, key)
        if paths is not None:
            return paths
        paths = _reused(stem, key)
        if paths is None:
            paths = fn(*args, **kwargs)
        _record(side, key, paths)
        return [Path(p) for p in paths]

    return inner


def figure_paths(out: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """The files :func:`save_figure` writes for ``out``: a figure suffix of ``out`` (``.png``,
    ``.svg``, ``.pdf``) is replaced by each format, any other name gets the format appended
    (``fig.v2`` -> ``fig.v2.png``: two such names must not both become ``fig.png``).

    Raises:
        TypeError: ``formats`` is a single string instead of a sequence of them.
        ValueError: no formats, or an empty one.
    """
    if isinstance(formats, str):
        raise TypeError(
            f"formats: expected a sequence of format names such as ('png', 'svg'), got {formats!r}"
        )
    fmts = [str(f).strip().lstrip(".").lower() for f in formats]
    if not fmts or not all(fmts):
        raise ValueError(
            f"formats: expected one or more format names such as ('png', 'svg'), got {formats!r}"
        )
    stem = _figure_stem(out)
    return [stem.with_name(f"{stem.name}.{fmt}") for fmt in dict.fromkeys(fmts)]


def save_figure(
    fig, out: str | Path, formats: tuple[str, ...] = ("png", "svg"), dpi: int = 150
) -> list[Path]:
    """Save a figure as ``out`` with each suffix in ``formats``; returns the written paths.

    ``out`` may carry a figure suffix (it is replaced) or not (:func:`figure_paths`). Parent
    folders are created.

    Raises:
        ValueError: no formats, or one matplotlib cannot write (before any file is written).
    """
    paths = figure_paths(out, formats)
    supported = fig.canvas.get_supported_filetypes()
    bad = [p.suffix[1:] for p in paths if p.suffix[1:] not in supported]
    if bad:
        raise ValueError(f"formats: expected some of {', '.join(sorted(supported))}, got {', '.join(bad)}")
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    with timed("plot", name=paths[0].stem):
        for path in paths:
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return paths


@skip_unchanged
def figure_file(build: Callable, out: str | Path, *args, **kwargs) -> list[Path]:
    """``save_figure(build(*args, **kwargs), out)``, skipped when unchanged (:func:`skip_unchanged`)."""
    return save_figure(build(*args, **kwargs), out)
