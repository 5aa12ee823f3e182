"""Strict JSON of results (:mod:`linstab.io.jsonable`): ``NaN`` is not JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from linstab.io.jsonable import dumps, to_jsonable


def _strict(text: str):
    """Parse as jq or ``JSON.parse`` would: ``NaN``/``Infinity`` are errors."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_anywhere_become_strings():
    """``jacobian-test --json`` printed ``"order": NaN`` (json.dumps' default), which strict parsers
    reject; non-finite floats inside tensors and arrays escaped the conversion too."""
    obj = {
        "order": float("nan"),
        "t": torch.tensor([[1.0, float("inf")]]),
        "a": np.array([-np.inf, 2.5]),
        "s": np.float32("nan"),
        "d": torch.float64,
        "n": [np.int64(3), (float("-inf"),)],
    }
    with pytest.raises(ValueError, match="not JSON: NaN"):
        _strict(json.dumps(obj, default=str))
    back = _strict(dumps(obj, indent=1))
    assert back == {
        "order": "nan",
        "t": [[1.0, "inf"]],
        "a": ["-inf", 2.5],
        "s": "nan",
        "d": "float64",
        "n": [3, ["-inf"]],
    }
    assert to_jsonable(torch.tensor([1.5, 2.0])) == [1.5, 2.0]


def test_what_cannot_be_json_is_refused_not_written():
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"x": object()})
    assert _strict(dumps({"x": object()}, default=lambda o: "obj")) == {"x": "obj"}


def test_numpy_bools_are_json_bools():
    """``np.bool_`` (a comparison of NumPy values) was refused, or written as the string
    ``"True"`` under ``default=str`` (the report's ``--profile`` file)."""
    obj = {"flag": np.bool_(True), "flags": [np.bool_(False)], "a": np.array([True])}
    assert to_jsonable(obj) == {"flag": True, "flags": [False], "a": [True]}
    assert _strict(dumps(obj, default=str)) == {"flag": True, "flags": [False], "a": [True]}
