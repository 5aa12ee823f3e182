"""Image references (linstab.data.refs): one parser of image specs for the report and the sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from linstab.data.imagenet import preprocess
from linstab.data.refs import image_refs, load_image, parse_index_spec
from linstab.data.selection import select_images


def test_default_refs_load_like_the_selection():
    refs = image_refs("2,5")
    assert refs.source.kind == "default" and not refs.source.lossy
    assert [r.id for r in refs.refs] == ["cifar10-test-2", "cifar10-test-5"]
    sel = select_images("2,5")
    x, label = load_image(refs.refs[1])
    assert torch.equal(x, sel.images[1]) and label == int(sel.labels[1])


def test_array_subsets_and_labels(tmp_path):
    arr = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=arr, labels=np.array([3, 1, 4, 1]))
    sel = select_images(f"{tmp_path / 'a.npz'}:1-2")
    assert sel.ids == ["a.npz[1]", "a.npz[2]"] and sel.labels.tolist() == [1, 4]
    assert torch.allclose(sel.images, torch.from_numpy(arr[1:3]))
    with pytest.raises(ValueError, match="out of range"):
        image_refs(f"{tmp_path / 'a.npz'}:4")


def test_folder_of_mixed_sizes_needs_a_size(tmp_path):
    rng = np.random.default_rng(1)
    for name, hw in (("a.png", (8, 8)), ("b.png", (10, 12))):
        Image.fromarray((rng.random((*hw, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    refs = image_refs(str(tmp_path))
    assert [r.id for r in refs.refs] == ["a.png", "b.png"] and refs.source.kind == "folder"
    with pytest.raises(ValueError, match="differ in size"):
        select_images(str(tmp_path))
    assert select_images(str(tmp_path), size=8).images.shape == (2, 3, 8, 8)


def test_a_folder_checksum_changes_with_the_pixels(tmp_path):
    """A sweep's recipe holds the folder's checksum: images rewritten with other pixels but the same
    names and file sizes (BMP) must change it, or a resumed sweep would keep the old images' rows."""

    def write(seed: int) -> str:
        rng = np.random.default_rng(seed)
        for name in ("a.bmp", "b.bmp"):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name)
        return image_refs(str(tmp_path)).source.sha256

    first, sizes = write(0), sorted(p.stat().st_size for p in tmp_path.iterdir())
    assert write(0) == first
    assert write(1) != first and sorted(p.stat().st_size for p in tmp_path.iterdir()) == sizes


@pytest.mark.parametrize("spec", ["", "jpeg:", "0-25", "no/such/path"])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        image_refs(spec)


def test_bad_jpeg_index_spec_is_named_before_the_folder_is_looked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("LINSTAB_CIFAR10_JPEG", str(tmp_path / "missing"))
    for spec in ("jpeg:-1", "jpeg:5-2", "jpeg:a", "jpeg:ALL"):
        with pytest.raises(ValueError, match="bad index"):
            image_refs(spec)


def test_integer_arrays_other_than_uint8_are_refused_not_cast(tmp_path):
    ones = np.ones((2, 3, 8, 8), dtype=np.int64)
    np.save(tmp_path / "int.npy", ones)
    with pytest.raises(TypeError, match="floating-point"):
        select_images(str(tmp_path / "int.npy"))
    refs = image_refs(str(tmp_path / "int.npy"))
    with pytest.raises(TypeError, match="floating-point"):
        load_image(refs.refs[0])
    np.save(tmp_path / "u8.npy", (ones * 255).astype(np.uint8))
    assert float(select_images(str(tmp_path / "u8.npy")).images.max()) == 1.0


def test_hidden_files_in_a_folder_are_left_out(tmp_path):
    """A folder copied from a Mac holds ``._x.png`` resource forks (not images): they stopped the
    whole folder with an unreadable-image error. Hidden names are left out by every reader."""
    from linstab.data.imagenet import preprocess
    from linstab.data.images import image_files, load_images

    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "x.png")
    (tmp_path / "._x.png").write_bytes(b"\x00\x05\x16\x07 not a png")
    Image.new("RGB", (32, 32)).save(tmp_path / ".thumb.png")
    (tmp_path / "sub.png").mkdir()  # a folder named like an image
    assert [p.name for p in image_files(tmp_path)] == ["x.png"]
    assert load_images(tmp_path).shape == (1, 3, 32, 32)
    sel = select_images(str(tmp_path))
    assert sel.ids == ["x.png"] and sel.images.shape == (1, 3, 32, 32)
    assert preprocess(tmp_path, size=32).shape == (1, 3, 32, 32)
    (tmp_path / "x.png").unlink()
    with pytest.raises(ValueError, match=r"empty selection: folder .* holds no image files \(\.png"):
        select_images(str(tmp_path))


# ---- found by a probe of odd specs and files -------------------------------------------------------
def test_a_range_is_checked_before_it_is_expanded():
    with pytest.raises(ValueError, match=r"indices 0-200000 of '0-200000' out of range 0\.\.19") as info:
        parse_index_spec("0-200000", 20)  # was: a list of 200,001 ints first, all named in the message
    assert len(str(info.value)) < 100
    with pytest.raises(ValueError, match="reversed"):
        parse_index_spec("7-3", 20)
    assert parse_index_spec(" 2 - 4 ,7", 20) == [2, 3, 4, 7]


@pytest.mark.parametrize("spec", ["\u0663", "\u00b2", "1-\u00b2"])  # Arabic-Indic three, superscript two
def test_indices_are_ascii_digits(spec):
    with pytest.raises(ValueError, match="bad index"):
        parse_index_spec(spec, 20)  # was: 3 accepted, or int()'s message without the spec


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([1.5, 2.0]), "not whole numbers"),  # was: silently truncated to 1
        (np.array([np.nan, 2.0]), "not whole numbers"),  # was: int()'s message, no file named
        (np.array([True, False]), "dtype bool"),  # was: read as 1, 0
        (np.array([-1, 2]), "negative labels"),
        (np.array(["a", "b"]), "dtype <U1"),
    ],
)
def test_npz_labels_must_be_class_indices(tmp_path, labels, message):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32), labels=labels)
    with pytest.raises(ValueError, match=f"x.npz: .*{message}"):
        image_refs(str(path))
    np.savez(path, images=np.zeros((2, 3, 4, 4), np.float32), labels=np.array([3.0, 0.0]))
    assert [r.label for r in image_refs(str(path)).refs] == [3, 0]


def test_an_index_spec_that_names_a_path_here_is_ambiguous(tmp_path, monkeypatch):
    (tmp_path / "3").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "3" / "a.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'3' is ambiguous.*\./3"):
        image_refs("3")  # was: the folder, silently, instead of default image 3
    assert [r.id for r in image_refs("./3").refs] == ["a.png"]
    assert [r.id for r in image_refs("4").refs] == ["cifar10-test-4"]


def test_jpeg_data_is_lossy_whatever_the_suffix(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png", format="JPEG")  # was: lossless, by its suffix
    Image.fromarray(arr).save(tmp_path / "b.jpg", format="PNG")
    assert image_refs(str(tmp_path / "a.png")).source.lossy
    assert not image_refs(str(tmp_path / "b.jpg")).source.lossy
    refs = image_refs(str(tmp_path))
    assert refs.source.lossy and [r.lossy for r in refs.refs] == [True, False]
    assert select_images(str(tmp_path / "a.png")).lossy


def test_huge_and_truncated_files_are_value_errors_naming_the_file(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
        tmp_path / "cut.png"
    )
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:-2000])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # PIL refuses images of twice that
    for load in (select_images, lambda p: select_images(p, size=16), preprocess):
        with pytest.raises(ValueError, match="big.png: .*decompression bomb"):  # was: DecompressionBombError
            load(str(tmp_path / "big.png"))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="cut.png: not a readable image file"):  # was: OSError, no file named
        preprocess(str(tmp_path / "cut.png"), size=16)


def test_an_empty_index_spec_after_a_path_is_named(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="empty index spec after ':'"):
        image_refs(f"{tmp_path / 'x.npy'}:")
