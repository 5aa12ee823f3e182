"""Argument checks shared by every layer: the one definition of "an integer of at least N" and
of "a real number".
"""

from __future__ import annotations

import numbers


def is_real(value) -> bool:
    """Whether ``value`` is a real number: a Python or NumPy int or float, not a ``bool`` (nor a
    NumPy bool), a string or a tensor. Finiteness and range are the caller's to check.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return int(value)
