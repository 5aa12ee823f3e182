"""The lossy JPEG re-encoding of CIFAR-10 (``train.zip``/``test.zip``); always labelled lossy."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .images import CIFAR10_CLASSES


def cifar10_jpeg_dir(path: str | os.PathLike | None = None) -> Path:
    """Locate the JPEG CIFAR-10 zips: ``path``, else ``$LINSTAB_CIFAR10_JPEG``.

    Raises:
        FileNotFoundError: when neither is given or the folder lacks the zips.
    """
    raw = path if path is not None else os.environ.get("LINSTAB_CIFAR10_JPEG")
    if raw is None:
        raise FileNotFoundError(
            "the JPEG CIFAR-10 folder is not set: set LINSTAB_CIFAR10_JPEG to the folder holding "
            "train.zip and test.zip (e.g. ../shared/data/cifar10-jpeg; `linstab train` also takes "
            "--data DIR, the Python functions root=)"
        )
    p = Path(raw).expanduser()
    if not (p / "train.zip").is_file() and not (p / "test.zip").is_file():
        raise FileNotFoundError(f"{p} holds neither train.zip nor test.zip")
    return p


def load_cifar10_jpeg(
    split: str = "test",
    root: str | os.PathLike | None = None,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the LOSSY JPEG CIFAR-10 set (``<split>/<class>/<index>.jpg`` in ``<split>.zip``).

    These are a JPEG re-encoding (quality about 75) of CIFAR-10, for training and statistics
    only; results on them are labelled as such.

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder with the zips (see :func:`cifar10_jpeg_dir`).
        limit: keep the first ``limit`` images in CIFAR order per class, round-robin over classes
            (for quick runs).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.
    """
    from PIL import Image

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    zpath = cifar10_jpeg_dir(root) / f"{split}.zip"
    if not zpath.is_file():
        raise FileNotFoundError(f"{zpath} not found")
    entries = jpeg_members(zpath, limit)
    with zipfile.ZipFile(zpath) as zf:
        n = len(entries)
        out = np.empty((n, 32, 32, 3), dtype=np.uint8)
        labels = np.empty(n, dtype=np.int64)
        for i, (label, _, name) in enumerate(entries):
            with Image.open(io.BytesIO(zf.read(name))) as im:
                out[i] = np.asarray(im.convert("RGB"))
            labels[i] = label
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def jpeg_members(zpath: str | os.PathLike, limit: int | None = None) -> list[tuple[int, int, str]]:
    """The JPEG files of a CIFAR-10 zip as ``(label, index in class, member name)``.

    Args:
        zpath: ``train.zip`` or ``test.zip``.
        limit: ``None``: all files, by class and then by index; else the first
            ``ceil(limit / 10)`` files of each class, classes interleaved (class ``i % 10``, its
            ``(i // 10)``-th file), cut to ``limit`` -- the order of ``jpeg:`` image specs.

    Raises:
        ValueError: for a member outside the ten class folders.
    """
    zpath = Path(zpath)
    with zipfile.ZipFile(zpath) as zf:
        entries = []
        for name in zf.namelist():
            if not name.lower().endswith(".jpg"):
                continue
            parts = name.split("/")
            cls = parts[-2]
            if cls not in CIFAR10_CLASSES:
                raise ValueError(f"{zpath}: unexpected class folder {cls!r} in {name!r}")
            entries.append((CIFAR10_CLASSES.index(cls), int(Path(parts[-1]).stem), name))
    entries.sort()
    if limit is not None:
        per_class = -(-int(limit) // 10)
        entries = _first_per_class(entries, per_class)[: int(limit)]
    return entries


def _first_per_class(entries: list[tuple[int, int, str]], per_class: int) -> list:
    by_class: dict[int, list] = {}
    for e in entries:
        by_class.setdefault(e[0], []).append(e)
    rows = [lst[:per_class] for _, lst in sorted(by_class.items())]
    inter = []
    for i in range(max((len(lst) for lst in rows), default=0)):
        for lst in rows:
            if i < len(lst):
                inter.append(lst[i])
    return inter
