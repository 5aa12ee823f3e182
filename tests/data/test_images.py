"""Images: defaults from foolbox, user files, validation errors, the JPEG CIFAR-10 zips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import linstab
from linstab.data import DEFAULT_LABELS, check_images, default_images, load_cifar10_jpeg, load_images

JPEG_DIR = Path(
    os.environ.get("LINSTAB_CIFAR10_JPEG", Path(__file__).parents[3] / "shared/data/cifar10-jpeg")
)


def test_default_images():
    x, y = linstab.default_images()
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.tolist() == list(DEFAULT_LABELS)
    x3, y3 = linstab.default_images([3, 5])
    assert torch.equal(x3, x[[3, 5]]) and y3.tolist() == [0, 6]
    with pytest.raises(ValueError, match="0..19"):
        linstab.default_images([20])


def test_load_user_images(tmp_path):
    x, _ = linstab.default_images([0, 1])
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(2):
        Image.fromarray(arr[i]).save(tmp_path / f"img{i}.png")
    one = load_images(tmp_path / "img0.png")
    assert one.shape == (1, 3, 32, 32)
    assert torch.allclose(one[0], x[0], atol=1 / 255 / 2 + 1e-7)
    folder = load_images(tmp_path)
    assert folder.shape == (2, 3, 32, 32)
    np.save(tmp_path / "b.npy", x.numpy())
    assert torch.equal(load_images(tmp_path / "b.npy"), x)
    np.savez(tmp_path / "c.npz", images=x.permute(0, 2, 3, 1).numpy())  # channels-last
    assert torch.equal(load_images(tmp_path / "c.npz"), x)
    np.save(tmp_path / "u8.npy", arr)
    assert torch.allclose(load_images(tmp_path / "u8.npy"), one.new_tensor(arr).permute(0, 3, 1, 2) / 255)


def test_bad_images(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_images(tmp_path / "missing.png")
    Image.new("L", (8, 8)).save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="RGB"):
        load_images(tmp_path / "gray.png")
    np.save(tmp_path / "bad.npy", np.full((2, 3, 8, 8), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_images(tmp_path / "bad.npy")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported"):
        load_images(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="RGB channels"):
        check_images(torch.rand(2, 4, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        check_images(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="Tensor"):
        check_images([[0.0]])
    with pytest.raises(ValueError, match="NaN"):
        check_images(torch.tensor(float("nan")).expand(3, 4, 4))
    # the messages show the shape as passed, not after the batch dimension was added
    with pytest.raises(ValueError, match=r"got \(1, 8, 8\)$"):
        check_images(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(3, 0, 8\)$"):
        check_images(torch.rand(3, 0, 8))


def test_cifar10_jpeg_subset():
    if not (JPEG_DIR / "test.zip").is_file():
        pytest.skip(f"JPEG CIFAR-10 not at {JPEG_DIR} (set LINSTAB_CIFAR10_JPEG)")
    x, y = load_cifar10_jpeg("test", JPEG_DIR, limit=30)
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    assert sorted(set(y.tolist())) == list(range(10))
    with pytest.raises(ValueError, match="split"):
        load_cifar10_jpeg("val", JPEG_DIR)


def test_empty_batches_and_unreadable_files_are_value_errors(tmp_path):
    """An empty batch is named (not a RuntimeError from min()); a file that is no image is a
    ValueError naming it (the CLI prints it), not a PIL traceback."""
    for x in (torch.rand(0, 3, 8, 8), torch.rand(3, 0, 8)):
        with pytest.raises(ValueError, match="no pixels"):
            check_images(x)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png: not a readable image file"):
        load_images(bad)
    with pytest.raises(ValueError, match="not a readable image file"):
        load_images(tmp_path)


def test_array_files_of_objects_strings_or_damage_are_refused_naming_the_file(tmp_path):
    """An object-dtype .npy said "Array can't be memory-mapped: Python objects in dtype" without
    the file's name (the image-spec path) or was unpickled (never)."""
    from linstab.data.selection import select_images

    obj = tmp_path / "objects.npy"
    np.save(obj, np.array([None, 1], dtype=object), allow_pickle=True)
    text = tmp_path / "text.npy"
    np.save(text, np.array([["a", "b"]]))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK not really a zip")
    cases = [
        (obj, "objects.npy: not a readable numeric array"),
        (text, "text.npy: an array of dtype <U1"),
        (broken, "broken.npz: not a readable numeric array"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            load_images(path)
        with pytest.raises(ValueError, match=match):
            select_images(str(path))
    two = tmp_path / "two.npz"
    np.savez(two, a=np.zeros((1, 3, 4, 4)), b=np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"two.npz: expected one array, or arrays named 'images'"):
        select_images(str(two))
    with pytest.raises(ValueError, match="'meta' device holds no values"):
        check_images(torch.empty(3, 8, 8, device="meta"))


def test_transparent_images_are_refused_and_opaque_rgba_is_read(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    x = load_images(tmp_path / "opaque.png")
    assert x.shape == (1, 3, 8, 8) and float(x[0, 0].min()) == pytest.approx(200 / 255)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(ValueError, match="transparent pixels"):
        load_images(tmp_path / "clear.png")


@pytest.mark.parametrize(
    "indices, error, message",
    [
        ([2.9], TypeError, "got an element float 2.9"),  # was: image 2
        ([True], TypeError, "got an element bool"),  # was: image 1
        ("12", TypeError, "got str '12'"),  # was: images 1 and 2, the characters
        (np.array([1.0]), TypeError, "got an element float64"),
        ([], ValueError, "empty selection"),  # was: torch.stack's RuntimeError
    ],
)
def test_default_image_indices_are_integers(indices, error, message):
    with pytest.raises(error, match=message):
        default_images(indices)
    x, y = default_images(np.array([4, 2]))
    assert (
        torch.equal(x, default_images([4, 2])[0])
        and y.tolist() == default_images(range(4, 1, -2))[1].tolist()
    )
