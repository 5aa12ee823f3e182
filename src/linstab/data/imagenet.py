"""ImageNet image preprocessing: torchvision's classic evaluation transform.

``Resize(256)`` (shorter side to 256, bilinear, antialiased; the longer side scaled by the same
factor and truncated, as torchvision does), ``CenterCrop(224)`` (offsets
``int(round((H - 224) / 2))``), ``ToTensor()`` ([0, 1] float). The result is in [0, 1]; the
mean/std normalization is part of the :class:`linstab.Network` (see
:func:`linstab.network.imagenet.imagenet_network`), as for every linstab model.

Two resampling paths, chosen by input type:

* files, PIL images and ``uint8`` arrays are resized by PIL (``Image.BILINEAR``, which is
  antialiased), exactly as torchvision's transform on PIL images;
* float arrays and tensors in [0, 1] by ``torch.nn.functional.interpolate(mode="bilinear",
  antialias=True)``, as torchvision's transform on float tensors.

The two differ by interpolation round-off (PIL rounds to 8 bits), below ``2 / 255``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..io.validate import is_int
from .images import IMAGE_SUFFIXES, image_files

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "preprocess", "resized_size", "center_crop_box"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PIL modes converted to RGB as torchvision's ImageFolder loader does (``img.convert("RGB")``);
# ImageNet holds a few grayscale and CMYK JPEGs.
_PIL_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")


def resized_size(hw: tuple[int, int], short: int) -> tuple[int, int]:
    """Output ``(H, W)`` of torchvision's ``Resize(short)``: shorter side to ``short``, the
    longer one ``int(short * long / short_side)`` (truncated).
    """
    h, w = int(hw[0]), int(hw[1])
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def center_crop_box(hw: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """``(top, left)`` of torchvision's ``CenterCrop``: ``int(round((H - h) / 2))`` (Python's
    round-half-to-even).
    """
    return int(round((hw[0] - crop[0]) / 2.0)), int(round((hw[1] - crop[1]) / 2.0))


def _size_pair(size) -> tuple[int, int]:
    if is_int(size):
        pair = (int(size), int(size))
    elif isinstance(size, tuple | list) and len(size) == 2 and all(map(is_int, size)):
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return pair


def _resize_arg(resize, crop: tuple[int, int]) -> int:
    if resize is None:
        return int(round(max(crop) * 256 / 224))
    if not is_int(resize):
        raise ValueError(f"resize must be an int (shorter side after resizing) or None, got {resize!r}")
    if int(resize) < max(crop):
        raise ValueError(
            f"resize={resize} is smaller than the crop {crop[0]}x{crop[1]}: the shorter side must "
            "be resized to at least the crop size"
        )
    return int(resize)


def _items(images, label: str = "images") -> list[tuple[object, str]]:
    """Flatten the input into single images (PIL image, path, or 3-D array) with labels."""
    from PIL import Image

    if isinstance(images, str | os.PathLike):
        path = Path(images).expanduser()
        if path.is_dir():
            return [(p, str(p)) for p in image_files(path)]
        if not path.is_file():
            raise ValueError(f"image file {path} does not exist")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{path}: expected a PNG/JPEG/BMP image file, got suffix {path.suffix!r}")
        return [(path, str(path))]
    if isinstance(images, Image.Image):
        return [(images, label)]
    if isinstance(images, np.ndarray | torch.Tensor):
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError(f"{label}: empty batch (shape {tuple(images.shape)})")
            channels_last = _channels_last(images, batch=True, label=label)
            return [(("array", images[i], channels_last), f"{label}[{i}]") for i in range(images.shape[0])]
        if images.ndim == 3:
            return [(("array", images, _channels_last(images, batch=False, label=label)), label)]
        raise ValueError(
            f"{label}: expected an RGB image (H, W, 3) / (3, H, W) or a batch of them, got shape "
            f"{tuple(images.shape)}"
            + (" (a grayscale image: stack it to 3 channels)" if images.ndim == 2 else "")
        )
    if isinstance(images, list | tuple):
        if not images:
            raise ValueError(f"{label}: empty list of images")
        out = []
        for i, item in enumerate(images):
            if isinstance(item, list | tuple):
                raise TypeError(f"{label}[{i}]: nested lists are not accepted")
            out.extend(_items(item, f"{label}[{i}]"))
        return out
    raise TypeError(
        f"{label}: expected a path, a PIL image, a numpy array, a tensor or a list of them, got "
        f"{type(images).__name__}"
    )


def _channels_last(a, batch: bool, label: str) -> bool:
    """Layout of an array: ``(.., 3, H, W)`` or ``(.., H, W, 3)``; ambiguous shapes follow the
    type's convention (numpy channels-last, torch channels-first).
    """
    c_first, c_last = a.shape[1 if batch else 0], a.shape[-1]
    if c_first == 3 and c_last != 3:
        return False
    if c_last == 3 and c_first != 3:
        return True
    if c_first == 3 and c_last == 3:
        return isinstance(a, np.ndarray)
    raise ValueError(
        f"{label}: expected 3 color channels (RGB) first or last, got shape {tuple(a.shape)}"
        + (" (drop the alpha channel)" if 4 in (c_first, c_last) else "")
    )


def _pil_to_tensor(img, crop: tuple[int, int], short: int, label: str) -> torch.Tensor:
    from PIL import Image

    if img.mode not in _PIL_MODES:
        raise ValueError(f"{label}: unsupported image mode {img.mode!r} (expected RGB, gray, P or CMYK)")
    img = img.convert("RGB")
    w, h = img.size
    if h == 0 or w == 0:
        raise ValueError(f"{label}: empty image ({w}x{h})")
    nh, nw = resized_size((h, w), short)
    if (nh, nw) != (h, w):
        img = img.resize((nw, nh), Image.BILINEAR)
    top, left = center_crop_box((nh, nw), crop)
    img = img.crop((left, top, left + crop[1], top + crop[0]))
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)


def _array_to_tensor(a, channels_last: bool, crop, short: int, label: str) -> torch.Tensor:
    from PIL import Image

    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a.detach().cpu()
    if t.numel() == 0:
        raise ValueError(f"{label}: empty image (shape {tuple(t.shape)})")
    if t.dtype == torch.uint8:
        hwc = t if channels_last else t.permute(1, 2, 0)
        return _pil_to_tensor(Image.fromarray(hwc.contiguous().numpy(), "RGB"), crop, short, label)
    if not t.is_floating_point():
        raise ValueError(f"{label}: expected uint8 (0..255) or float (0..1) values, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{label}: contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{label}: float values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
            "(divide 0..255 values by 255, or pass uint8)"
        )
    chw = t.permute(2, 0, 1) if channels_last else t
    h, w = chw.shape[-2:]
    nh, nw = resized_size((h, w), short)
    x = chw.unsqueeze(0)
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(
            x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    top, left = center_crop_box((nh, nw), crop)
    return x[0, :, top : top + crop[0], left : left + crop[1]].to(torch.float32).contiguous()


def preprocess(images, size: int | tuple[int, int] = 224, resize: int | None = None) -> torch.Tensor:
    """ImageNet evaluation preprocessing: shorter side to ``resize``, center crop ``size``, [0, 1].

    Args:
        images: a PNG/JPEG path or a folder of them, a PIL image, a ``uint8`` (0..255) or float
            ([0, 1]) array or tensor, ``(H, W, 3)`` / ``(3, H, W)`` or a batch ``(N, ...)`` of
            either layout, or a list of any of these (sizes may differ). Gray, palette and CMYK
            files are converted to RGB (as torchvision's ImageFolder does); arrays must have 3
            channels.
        size: crop size, an int or ``(height, width)``; 224 by default.
        resize: shorter side after resizing; default ``round(max(size) * 256 / 224)`` (256 for
            224, torchvision's classic ratio; torchvision's V2 ResNet weights were evaluated with
            232). An image whose shorter side already equals it is not resampled.

    Returns:
        ``(N, 3, size, size)`` float32 in [0, 1].

    Raises:
        ValueError: empty input, wrong channel count, NaN/inf, float values outside [0, 1],
            unsupported dtype or mode, missing file, ``resize`` smaller than the crop.
        TypeError: an input of another type.
    """
    from PIL import Image

    crop = _size_pair(size)
    short = _resize_arg(resize, crop)
    out = []
    for obj, label in _items(images):
        if isinstance(obj, Path):
            try:
                im = Image.open(obj)
            except OSError as exc:
                raise ValueError(f"{label}: not a readable image file ({exc})") from None
            except Image.DecompressionBombError as exc:  # not an OSError: more pixels than PIL's limit
                raise ValueError(f"{label}: {exc}") from None
            with im:
                try:
                    out.append(_pil_to_tensor(im, crop, short, label))
                except OSError as exc:  # decoded only here: a truncated or damaged file
                    raise ValueError(f"{label}: not a readable image file ({exc})") from None
        elif isinstance(obj, Image.Image):
            out.append(_pil_to_tensor(obj, crop, short, label))
        else:
            _, a, channels_last = obj
            out.append(_array_to_tensor(a, channels_last, crop, short, label))
    return torch.stack(out)
