"""Training data: the JPEG CIFAR-10 arrays (decoded once, cached as ``.npy``), batched
augmentation and normalization.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.cifar10_jpeg import cifar10_jpeg_dir, load_cifar10_jpeg
from ..io.processes import tmp_path

DATASET_DESCRIPTION = "CIFAR-10 lossy JPEG re-encoding (quality ~75), train.zip/test.zip"


DEFAULT_PAD = 4


def data_cache_dir() -> Path:
    """The folder caching decoded JPEG CIFAR-10 arrays.

    ``$LINSTAB_CACHE_DIR/cifar10-jpeg`` when that variable is set (the same root as the weight
    cache of :func:`linstab.models.cache_dir`), else ``$XDG_CACHE_HOME/linstab/cifar10-jpeg``,
    else ``~/.cache/linstab/cifar10-jpeg``.
    """
    env = os.environ.get("LINSTAB_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "cifar10-jpeg"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "linstab" / "cifar10-jpeg"


def _file_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file (identifies the zip's content)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_split(
    split: str,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    *,
    cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one split of the JPEG CIFAR-10 set, using the ``.npy`` cache when possible.

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder holding ``train.zip``/``test.zip`` (default ``$LINSTAB_CIFAR10_JPEG``).
        limit: keep only this many images (balanced over classes, see
            :func:`linstab.data.load_cifar10_jpeg`).
        cache: read/write the decoded arrays in :func:`data_cache_dir`.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)`` CPU tensors.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit!r}")
    zpath = cifar10_jpeg_dir(root) / f"{split}.zip"
    if not zpath.is_file():
        raise FileNotFoundError(f"{zpath} not found")
    if not cache:
        return load_cifar10_jpeg(split, zpath.parent, limit)
    tag = f"{split}-{'all' if limit is None else int(limit)}-{_file_fingerprint(zpath)}"
    cdir = data_cache_dir()
    ipath, lpath = cdir / f"{tag}-images.npy", cdir / f"{tag}-labels.npy"
    if ipath.is_file() and lpath.is_file():
        try:
            images = np.load(ipath, allow_pickle=False)
            labels = np.load(lpath, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache file: decode again and overwrite it
        else:
            if (
                images.dtype == np.uint8
                and images.ndim == 4
                and images.shape[1:] == (3, 32, 32)
                and labels.shape == (images.shape[0],)
            ):
                return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    images_t, labels_t = load_cifar10_jpeg(split, zpath.parent, limit)
    try:
        _atomic_save_npy(ipath, images_t.numpy())
        _atomic_save_npy(lpath, labels_t.numpy())
    except OSError as exc:  # a read-only cache is not fatal
        print(f"warning: could not cache decoded {split} images in {cdir}: {exc}", file=sys.stderr)
    return images_t, labels_t


def augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    pad: int = DEFAULT_PAD,
    flip: bool = True,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, batched (no Python loop).

    The batch is zero-padded by ``pad`` pixels on each side; every image then gets its own
    random offset in ``[0, 2 * pad]`` in each direction and, with probability 1/2, is mirrored
    left-right. Both are done with a single advanced-indexing gather.

    Args:
        images: ``(N, C, H, W)`` images of any dtype (uint8 0..255 or float).
        generator: a CPU :class:`torch.Generator` making the result reproducible.
        pad: padding (and maximal shift) in pixels; 0 disables the crop.
        flip: enable random horizontal flips.

    Returns:
        A new tensor with the shape, dtype and device of ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f"augment expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, _, h, w = images.shape
    dev = images.device
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    mirror = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    oy, ox, mirror = oy.to(dev), ox.to(dev), mirror.to(dev)
    padded = nn.functional.pad(images, (pad, pad, pad, pad)) if pad else images
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h  # (N, H)
    cols = torch.where(mirror[:, None], ox[:, None] + (w - 1 - ar_w), ox[:, None] + ar_w)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(images.shape[1], device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Map uint8 (0..255) or float ([0, 1]) images to ``(x - mean) / std`` in float32."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
