"""Conversion of results to JSON-able values (dtypes, NumPy scalars, tensors, non-finite floats)
and strict JSON text of them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float64`` -> ``"float64"``."""
    return str(dtype).replace("torch.", "")


def to_jsonable(obj):
    """A copy of ``obj`` with dtypes, NumPy scalars, arrays and tensors as JSON values and
    non-finite floats as strings.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.dtype):
        return dtype_name(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return to_jsonable(float(obj))
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def dumps(obj, **kwargs) -> str:
    """Strict JSON text of ``obj`` (through :func:`to_jsonable`: non-finite floats as the strings
    ``"nan"``, ``"inf"``, ``"-inf"``), readable by every JSON parser (``NaN`` is not JSON);
    ``kwargs`` go to :func:`json.dumps` (``indent``, ``default``, ...).
    """
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def is_plain_json(v) -> bool:
    """Whether ``v`` is a JSON scalar or a flat list of them (kept in records as it is)."""
    return isinstance(v, (int, float, str, bool, type(None))) or (
        isinstance(v, (list, tuple)) and all(isinstance(e, (int, float, str, bool)) for e in v)
    )
