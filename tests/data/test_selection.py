"""Image selections from text specs (linstab.data.selection)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from linstab.data import default_images, select_images
from linstab.data.selection import parse_index_spec

JPEG = Path(os.environ.get("LINSTAB_CIFAR10_JPEG", Path(__file__).parents[3] / "shared/data/cifar10-jpeg"))


def test_index_specs_select_default_images():
    sel = select_images("0,3-4")
    x, y = default_images([0, 3, 4])
    assert torch.equal(sel.images, x) and torch.equal(sel.labels, y)
    assert sel.ids == ["cifar10-test-0", "cifar10-test-3", "cifar10-test-4"] and not sel.lossy
    assert select_images("all").images.shape[0] == 20
    assert parse_index_spec("2-4,7", 10) == [2, 3, 4, 7]


@pytest.mark.parametrize("spec", ["", "5-2", "0-25", "x1", "jpeg:"])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        select_images(spec)


def test_single_image_required():
    assert select_images("7", single=True).images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected one image"):
        select_images("0-1", single=True)


def test_arrays_and_preprocessing(tmp_path):
    arr = np.random.default_rng(0).random((2, 3, 40, 48)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    sel = select_images(str(tmp_path / "a.npy"))
    assert sel.images.shape == (2, 3, 40, 48) and sel.labels is None and not sel.lossy
    assert select_images(str(tmp_path / "a.npy"), size=32).images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="32 x 32 CIFAR-10"):
        select_images("0", size=64)


@pytest.mark.skipif(not (JPEG / "test.zip").is_file(), reason=f"JPEG CIFAR-10 zips not found in {JPEG}")
def test_jpeg_test_set_is_labelled_lossy(monkeypatch):
    monkeypatch.setenv("LINSTAB_CIFAR10_JPEG", str(JPEG))
    sel = select_images("jpeg:0-4")
    assert sel.lossy and sel.images.shape == (5, 3, 32, 32) and sel.labels.shape == (5,)
    assert all("lossy" in i for i in sel.ids)
    assert sorted(select_images("jpeg:0-9").labels.tolist()) == list(range(10))  # interleaved classes
    assert 0.0 <= float(sel.images.min()) and float(sel.images.max()) <= 1.0
