"""Image selections given as text, decoded: index specs (``0-9``, ``0,3,7``, ``all``), the lossy
JPEG test set (``jpeg:0-999``) and paths (parsed by :func:`~linstab.data.refs.image_refs`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .cifar10_jpeg import load_cifar10_jpeg
from .imagenet import preprocess
from .images import default_images
from .refs import image_refs, load_image, parse_index_spec

__all__ = ["ImageSelection", "parse_index_spec", "select_images"]


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
    """Images named by a spec (parsed by :func:`~linstab.data.refs.image_refs`), decoded.

    Args:
        spec: indices into the 20 lossless default images (``0``, ``0-9``, ``0,3,7``, ``all``);
            ``jpeg:INDICES`` for the lossy JPEG CIFAR-10 test set (positions in
            ``load_cifar10_jpeg("test", limit=10000)``, whose classes are interleaved, so any
            prefix such as ``jpeg:0-99`` is class-balanced; ``jpeg:all`` for all 10,000; the zips
            are found through ``$LINSTAB_CIFAR10_JPEG``); or a PNG/JPEG file, a folder, ``.npy`` or
            ``.npz`` in [0, 1] (``.npz`` labels are used), optionally ``PATH:INDICES``.
        single: exactly one image is expected.
        size: preprocess files to this size (ImageNet networks: shorter side resized, center
            crop); index specs are refused then, since those images are 32 x 32 CIFAR-10.

    Raises:
        ValueError: for a malformed spec, indices out of range, or not one image when
            ``single``.
    """
    refs = image_refs(spec)
    kind = refs.source.kind
    if size is not None and kind in ("default", "jpeg"):
        raise ValueError(
            f"images {spec!r} are 32 x 32 CIFAR-10 images; this network takes {size} inputs: "
            "give image files (they are resized and center-cropped)"
        )
    idx = [r.index for r in refs.refs]
    if kind == "default":
        x, y = default_images(idx)
        ids = [r.id for r in refs.refs]
    elif kind == "jpeg":
        x_all, y_all = load_cifar10_jpeg("test", limit=10000)  # decoded once, cached; same order
        x, y = x_all[idx].float() / 255.0, y_all[idx]
        ids = [f"{r.id} (lossy)" for r in refs.refs]
    else:
        if size is None:
            xs = [load_image(r)[0] for r in refs.refs]
            shapes = sorted({tuple(t.shape) for t in xs})
            if len(shapes) > 1:
                raise ValueError(
                    f"images of {spec!r} differ in size ({shapes[:3]}): give a size (--input-size) to "
                    "resize and crop them"
                )
            x = torch.stack(xs)
        elif kind == "array":
            x = preprocess(torch.stack([load_image(r)[0] for r in refs.refs]), size=size)
        else:
            x = torch.cat([preprocess(r.path, size=size) for r in refs.refs])
        labels = [r.label for r in refs.refs]
        y = None if any(v is None for v in labels) else torch.tensor(labels, dtype=torch.int64)
        ids = [r.id for r in refs.refs]
    if single and x.shape[0] != 1:
        raise ValueError(f"expected one image, {spec!r} selects {x.shape[0]}")
    return ImageSelection(x, y, ids, refs.source.lossy)
