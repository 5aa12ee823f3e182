"""Image selections given as text: index specs (``0-9``, ``0,3,7``, ``all``), the lossy JPEG test
set (``jpeg:0-999``) and paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from .cifar10_jpeg import load_cifar10_jpeg
from .imagenet import preprocess
from .images import DEFAULT_LABELS, default_images, load_images


def parse_index_spec(spec: str, n: int) -> list[int]:
    """Parse ``"3"``, ``"0-9"``, ``"0,2,5-7"`` or ``"all"`` into indices in ``0..n-1``.

    Raises:
        ValueError: for malformed specs or indices out of range.
    """
    text = str(spec).strip()
    if text == "all":
        return list(range(n))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()) or int(a) > int(b):
                raise ValueError(f"bad index range {part!r} in {spec!r}")
            out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"bad index {part!r} in {spec!r}: expected e.g. 0, 0-9, 0,2,5-7 or all")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices {bad} out of range 0..{n - 1}")
    return out


class ImageSelection(NamedTuple):
    """Images chosen by a text spec.

    Attributes:
        images: ``(N, 3, H, W)`` float32 in [0, 1].
        labels: ``(N,)`` int64, or ``None`` for user files.
        ids: a readable id per image (JPEG images say ``lossy``).
        lossy: whether the images come from the lossy JPEG re-encoding of CIFAR-10.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    lossy: bool


def select_images(
    spec: str, *, single: bool = False, size: int | tuple[int, int] | None = None
) -> ImageSelection:
    """Images named by a spec: default-image indices, ``jpeg:INDICES`` or a path.

    Args:
        spec: indices into the 20 lossless default images (``0``, ``0-9``, ``0,3,7``, ``all``);
            ``jpeg:INDICES`` for the lossy JPEG CIFAR-10 test set (positions in
            ``load_cifar10_jpeg("test", limit=10000)``, whose classes are interleaved, so any
            prefix such as ``jpeg:0-99`` is class-balanced; ``jpeg:all`` for all 10,000; the zips
            are found through ``$LINSTAB_CIFAR10_JPEG``); or a PNG/JPEG file, a folder, ``.npy`` or
            ``.npz`` in [0, 1].
        single: exactly one image is expected.
        size: preprocess files to this size (ImageNet networks: shorter side resized, center
            crop); index specs are refused then, since those images are 32 x 32 CIFAR-10.

    Raises:
        ValueError: for a malformed spec, indices out of range, or not one image when
            ``single``.
    """
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty image spec: expected indices (0-9), jpeg:INDICES or a path")
    lossy = spec.lower().startswith("jpeg:")
    looks_like_indices = all(c.isdigit() or c in ",- " for c in spec) or spec == "all"
    if (lossy or looks_like_indices) and not Path(spec).exists():
        if size is not None:
            raise ValueError(
                f"images {spec!r} are 32 x 32 CIFAR-10 images; this network takes {size} inputs: "
                "give image files (they are resized and center-cropped)"
            )
        if lossy:
            if not spec[len("jpeg:") :].strip():
                raise ValueError("jpeg: needs indices, e.g. jpeg:0-99 or jpeg:all")
            x_all, y_all = load_cifar10_jpeg("test", limit=10000)  # classes interleaved
            idx = parse_index_spec(spec[len("jpeg:") :], x_all.shape[0])
            x, y = x_all[idx].float() / 255.0, y_all[idx]
            ids = [f"cifar10-jpeg-test-{i} (lossy)" for i in idx]
        else:
            idx = parse_index_spec(spec, len(DEFAULT_LABELS))
            x, y = default_images(idx)
            ids = [f"cifar10-test-{i}" for i in idx]
    else:
        if size is None:
            x = load_images(spec)
        elif Path(spec).suffix.lower() in (".npy", ".npz"):
            x = preprocess(load_images(spec), size=size)
        else:
            x = preprocess(spec, size=size)
        y, ids = None, [f"{Path(spec).name}[{i}]" for i in range(x.shape[0])]
    if single and x.shape[0] != 1:
        raise ValueError(f"expected one image, {spec!r} selects {x.shape[0]}")
    return ImageSelection(x, y, ids, lossy)
