"""Figures. Plotting never selects a matplotlib backend: figures are built with
``matplotlib.figure.Figure`` (no pyplot) and always written to a path the caller gives.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import pickle
from collections.abc import Callable
from pathlib import Path

from .._version import __version__
from ..io.profile import timed

__all__ = ["figure_file", "save_figure", "skip_unchanged"]


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


def skip_unchanged(fn: Callable) -> Callable:
    """Decorator for plot functions with an ``out`` argument: when the files a previous call
    wrote for the same ``out`` still exist and every other argument is the same (SHA-256 of
    their pickle, with the function, linstab and matplotlib versions), return their paths
    without drawing again (values equal as float64 count as the same, so results read back from
    the cache match freshly computed ones). A hidden ``.<name>.figkey.json`` beside the figure
    records the key and the paths. Arguments that cannot be hashed (:func:`_feed`) always draw.
    """
    sig = inspect.signature(fn)
    if "out" not in sig.parameters:
        raise TypeError(f"skip_unchanged needs a function with an 'out' argument, got {fn.__qualname__}")

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        out = Path(bound.arguments["out"])
        stem = out.with_suffix("") if out.suffix.lower() in (".png", ".svg", ".pdf") else out
        side = stem.parent / f".{stem.name}.figkey.json"
        try:
            import matplotlib

            h = hashlib.sha256()
            what = (fn.__module__, fn.__qualname__, __version__, matplotlib.__version__)
            _feed(h, (what, {k: v for k, v in bound.arguments.items() if k != "out"}))
            key = h.hexdigest()
        except (pickle.PicklingError, TypeError, AttributeError):
            return fn(*args, **kwargs)
        try:
            old = json.loads(side.read_text())
            if old["key"] == key and all(Path(p).is_file() for p in old["paths"]):
                return [Path(p) for p in old["paths"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        paths = fn(*args, **kwargs)
        side.write_text(json.dumps({"key": key, "paths": [str(p) for p in paths]}))
        return paths

    return inner


def save_figure(
    fig, out: str | Path, formats: tuple[str, ...] = ("png", "svg"), dpi: int = 150
) -> list[Path]:
    """Save a figure as ``out`` with each suffix in ``formats``; returns the written paths.

    ``out`` may carry a suffix (it is replaced) or not. Parent folders are created.
    """
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".svg", ".pdf") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with timed("plot", name=stem.name):
        for fmt in formats:
            path = stem.with_suffix("." + fmt)
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
            paths.append(path)
    return paths


@skip_unchanged
def figure_file(build: Callable, out: str | Path, *args, **kwargs) -> list[Path]:
    """``save_figure(build(*args, **kwargs), out)``, skipped when unchanged (:func:`skip_unchanged`)."""
    return save_figure(build(*args, **kwargs), out)
