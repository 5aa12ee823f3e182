"""The shared integer and real-number checks."""

from __future__ import annotations

import numpy as np
import pytest

from linstab.io.validate import check_int


def test_check_int_accepts_integers_and_says_what_arrived():
    assert check_int("n", 3) == 3 and type(check_int("n", np.int64(4))) is int
    assert check_int("n", 0, 0) == 0 and check_int("n", None, optional=True) is None
    with pytest.raises(ValueError, match=r"n must be an int >= 1; got 0"):
        check_int("n", 0)
    with pytest.raises(ValueError, match=r"m must be an int >= 10 or None; got 9"):
        check_int("m", 9, 10, optional=True)
    for bad in (True, 2.0, "3", None, np.float64(2)):
        with pytest.raises(TypeError, match=f"n must be an int >= 1; got {type(bad).__name__}"):
            check_int("n", bad)


def test_is_real_takes_python_and_numpy_numbers_only():
    import torch

    from linstab.io.validate import is_real

    for v in (1, 2.5, float("nan"), float("inf"), np.float32(0.1), np.int64(3), np.float64(-1.0)):
        assert is_real(v), v
    for v in (True, False, np.True_, "1", None, [1.0], torch.tensor(1.0), 1j, np.complex64(1)):
        assert not is_real(v), v
