"""Argument checks shared by every layer: the one definition of "an integer of at least N" and
of "a real number" and "an integer".
"""

from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def is_real(value) -> bool:
    """Whether ``value`` is a real number: a Python or NumPy int or float, not a ``bool`` (nor a
    NumPy bool), a string or a tensor. Finiteness and range are the caller's to check.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value) -> bool:
    """Whether ``value`` is an integer: a Python or NumPy int, not a ``bool`` (nor a float such as
    ``2.0``, a string or a tensor). Range is the caller's to check.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 1, *, optional: bool = False) -> int | None:
    """``value`` as an ``int``, after checking that it is an integer of at least ``minimum``.

    Python and NumPy integers are accepted; ``bool``, floats (even ``2.0``), strings and other
    types are not.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed.
        minimum: the smallest value allowed.
        optional: whether ``None`` is allowed (it is returned unchanged).

    Returns:
        ``int(value)``, or ``None`` when ``value`` is ``None`` and ``optional``.

    Raises:
        TypeError: ``value`` is not an integer (the message says what was expected and what
            arrived).
        ValueError: ``value`` is below ``minimum``.
    """
    if value is None and optional:
        return None
    expected = f"an int >= {minimum}" + (" or None" if optional else "")
    if not is_int(value):
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return int(value)


def check_first_folder_writable(paths: Iterable[str | os.PathLike]) -> None:
    """The first of ``paths`` that exists (e.g. an output folder, then its parents) must be a
    folder in which a file can be created: tried with a hidden empty file, removed at once, so
    that an output under a file or in a read-only folder is refused before any work.

    Raises:
        ValueError: ``"<q> is a file, not a folder"`` or ``"cannot write in the folder <q> (...)"``
            (callers prefix what the folder is for).
    """
    for q in map(Path, paths):
        if not q.exists():
            continue
        if not q.is_dir():
            raise ValueError(f"{q} is a file, not a folder")
        try:
            fd, probe = tempfile.mkstemp(prefix=".linstab-write-test-", dir=q)
        except OSError as exc:
            raise ValueError(f"cannot write in the folder {q} ({exc.strerror or exc})") from None
        os.close(fd)
        os.unlink(probe)
        return
