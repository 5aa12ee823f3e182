"""The 20 lossless CIFAR-10 test images shipped in ``foolbox``, user image files and input checks."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


DEFAULT_LABELS = (3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
"""Suffixes of the image files linstab reads (case-insensitive)."""


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name: regular files with a suffix in
    :data:`IMAGE_SUFFIXES`, hidden names (``.x.png``, macOS ``._x.png`` resource forks) left out.

    Raises:
        ValueError: the folder holds no such file (the message names the suffixes).
    """
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise ValueError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def check_images(
    x: torch.Tensor | np.ndarray, *, name: str = "images", channels: int | None = 3
) -> torch.Tensor:
    """Validate a batch of images in [0, 1] and return it as a float tensor.

    Accepts ``(C, H, W)`` or ``(N, C, H, W)`` with ``C = channels`` (3, RGB, unless a network
    takes another number, e.g. 1 for grayscale; ``None``: any ``C >= 1``); a float tensor or
    array (uint8 arrays are rejected: divide by 255 first, so nothing is rescaled silently).

    Raises:
        TypeError: for a non-tensor or a non-floating dtype.
        ValueError: for a wrong shape, NaN/inf, or values outside [0, 1].
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the 'meta' device holds no values; give the images themselves")
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected floating-point values in [0, 1], got dtype {x.dtype} "
            "(convert uint8 images with x / 255)"
        )
    given = tuple(x.shape)  # as the caller passed it, for the messages
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if channels is None:
        if x.ndim != 4:
            raise ValueError(f"{name}: expected shape (C, H, W) or (N, C, H, W), got {given}")
    elif x.ndim != 4 or x.shape[1] != channels:
        what = "3 RGB channels" if channels == 3 else f"{channels} channel{'s' if channels > 1 else ''}"
        raise ValueError(
            f"{name}: expected shape ({channels}, H, W) or (N, {channels}, H, W) with {what}, got {given}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name}: no pixels: got an empty batch or image of shape {given}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x


def _foolbox_data_dir() -> Path:
    try:
        import foolbox  # noqa: F401  (imported for its data files only)
    except ImportError as exc:  # pragma: no cover - foolbox is a dependency
        raise ImportError("the default images ship inside the 'foolbox' package") from exc
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    return Path(spec.origin).parent / "data"


def _indices(indices) -> list[int]:
    """``indices`` as a list of ints, each checked to be an integer (never truncated, never a bool)."""
    expected = "expected a list, range or 1-D array of ints in 0..19"
    if isinstance(indices, str | bytes) or not isinstance(indices, Iterable):
        raise TypeError(f"default image indices: {expected}, got {type(indices).__name__} {indices!r}")
    out = []
    for i in indices:
        is_bool = isinstance(i, bool | np.bool_) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool)
        try:
            if is_bool:
                raise TypeError
            out.append(operator.index(i))
        except TypeError:
            raise TypeError(
                f"default image indices: {expected}, got an element {type(i).__name__} {i!r}"
            ) from None
    return out


def default_images(indices: list[int] | range | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 lossless CIFAR-10 test images (test-set indices 0-19) shipped with foolbox.

    Args:
        indices: a subset of 0..19 (default: all 20): a list, tuple, range or 1-D array of
            integers (Python, NumPy or torch; not bools, floats or a string such as ``"0-4"``:
            :func:`~linstab.data.select_images` parses those).

    Returns:
        ``(images, labels)``: ``(N, 3, 32, 32)`` float32 in [0, 1] and ``(N,)`` int64.

    Raises:
        TypeError: indices that are not a sequence of integers.
        ValueError: indices outside 0..19, or none.
    """
    from PIL import Image

    idx = list(range(20)) if indices is None else _indices(indices)
    if not idx:
        raise ValueError("default image indices: empty selection; give indices in 0..19 (or None for all)")
    root = _foolbox_data_dir()
    bad = [i for i in idx if not 0 <= i < 20]
    if bad:
        raise ValueError(f"default image indices must lie in 0..19, got {bad}")
    imgs, labels = [], []
    for i in idx:
        hits = sorted(root.glob(f"cifar10_{i:02d}_*.png"))
        if not hits:
            raise FileNotFoundError(f"foolbox image cifar10_{i:02d}_*.png not found in {root}")
        label = int(hits[0].stem.rsplit("_", 1)[1])
        with Image.open(hits[0]) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        imgs.append(torch.from_numpy(arr).permute(2, 0, 1))
        labels.append(label)
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.int64)


def _read_image_file(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "P"):
                raise ValueError(f"{path}: expected an RGB image, got mode {im.mode!r}")
            if im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info):
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                if int(alpha.min()) < 255:
                    raise ValueError(
                        f"{path}: has transparent pixels (alpha down to {int(alpha.min())}); linstab "
                        "does not guess a background: save the image without transparency"
                    )
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as exc:  # PIL.UnidentifiedImageError, truncated or unreadable files
        raise ValueError(f"{path}: not a readable image file ({exc})") from None
    except Image.DecompressionBombError as exc:  # not an OSError: more pixels than PIL's limit
        raise ValueError(f"{path}: {exc}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def channels_first(arr: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` / ``(H, W, C)`` with ``C`` in (1, 3) to channels-first.

    An array whose channel axis already comes first (size 1 or 3), or of another shape, is
    returned as it is.
    """
    if arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        return np.transpose(arr, (0, 3, 1, 2))
    if arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3):
        return np.transpose(arr, (2, 0, 1))
    return arr


def read_array(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """The image array of a ``.npy`` file (memory-mapped with ``mmap``) or of a ``.npz`` file (its
    one array, or the one named ``images``), never unpickling anything.

    Raises:
        ValueError: a file that is no numeric array file (pickled objects, damaged), an ``.npz``
            with several arrays and none named ``images``, or an array that is neither float,
            integer nor bool; the message names the file.
    """
    import zipfile

    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise LookupError(
                        f"expected one array, or arrays named 'images' (and 'labels'), got {keys}"
                    )
                arr = z[key]
    except LookupError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{path}: not a readable numeric array file ({exc}); expected a .npy/.npz of images "
            "(float in [0, 1] or uint8), saved without pickled objects"
        ) from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(
            f"{path}: an array of dtype {arr.dtype}; expected images as float in [0, 1] or uint8"
        )
    return arr


def load_images(source: str | os.PathLike) -> torch.Tensor:
    """Load user images: one PNG/JPEG file, a folder of them, or a ``.npy``/``.npz`` batch.

    Arrays must be float in [0, 1], shaped ``(N, C, H, W)``/``(C, H, W)`` or channels-last
    ``(N, H, W, C)`` for ``C`` = 1 (grayscale) or 3 (RGB); channels-first arrays may have any
    ``C`` (the network checks it); a ``.npz`` must hold one array (or one named ``images``).
    uint8 arrays are read as 0..255 and divided by 255 (this is the only conversion and it is
    stated here). Image files are read as RGB.

    Returns:
        ``(N, C, H, W)`` float32 in [0, 1] (``C = 3`` for image files).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"image source {path} does not exist")
    if path.is_dir():
        imgs = [_read_image_file(p) for p in image_files(path)]
        shapes = {tuple(t.shape) for t in imgs}
        if len(shapes) != 1:
            raise ValueError(f"images in {path} differ in size: {sorted(shapes)}")
        return check_images(torch.stack(imgs), name=str(path))
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return check_images(_read_image_file(path), name=str(path))
    if suffix in (".npy", ".npz"):
        arr = read_array(path)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        arr = channels_first(arr)
        # checked before the cast: an integer array other than uint8 is refused, not converted
        x = torch.from_numpy(np.ascontiguousarray(arr))
        return check_images(x, name=str(path), channels=None).float()
    raise ValueError(f"unsupported image source {path}: expected .png/.jpg/.jpeg, a folder, .npy or .npz")
