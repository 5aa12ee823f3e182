"""Options shared by the commands: model, images, dtype, k."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.images import default_images, load_images
from ..data.selection import parse_index_spec
from ..models.registry import default_model_name
from ..network.view import Network, load_model


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model NAME`` and ``--weights PATH``."""
    p.add_argument(
        "--model",
        default=None,
        help="registered model name (see 'linstab models'); default: the best embedded model, "
        "else resnet56-akamaster",
    )
    p.add_argument("--weights", default=None, help="explicit weights file for --model")


def network_from_args(args: argparse.Namespace):
    """Load the :class:`~linstab.network.Network` named by ``--model``/``--weights``."""
    return load_model(args.model or default_model_name(), weights=args.weights)


def add_image_args(p: argparse.ArgumentParser, multiple: bool = False, default: str = "0") -> None:
    """``--image I`` (one) or ``--images SPEC`` (several): default-image indices or a path."""
    if multiple:
        p.add_argument(
            "--images",
            default=default,
            help="default-image indices (e.g. 0-9, 0,3,7, all) or a path to PNG/JPEG files, "
            f"a folder, .npy or .npz (default: {default})",
        )
    else:
        p.add_argument(
            "--image",
            default=default,
            help=f"default-image index 0..19 or an image file (default: {default})",
        )


def images_from_args(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Images selected by ``--image``/``--images``.

    Returns:
        ``(images, labels, ids)``: ``(N, 3, H, W)`` in [0, 1], labels (``None`` for user
        files) and a readable id per image.
    """
    spec = getattr(args, "images", None)
    if spec is None:
        spec = getattr(args, "image", "0")
    spec = str(spec)
    looks_like_indices = all(c.isdigit() or c in ",- " for c in spec) or spec == "all"
    if looks_like_indices and not Path(spec).exists():
        idx = parse_index_spec(spec, 20)
        if getattr(args, "image", None) is not None and getattr(args, "images", None) is None:
            if len(idx) != 1:
                raise ValueError(f"--image takes one image, got {spec!r}")
        x, y = default_images(idx)
        return x, y, [f"cifar10-test-{i}" for i in idx]
    x = load_images(spec)
    if getattr(args, "images", None) is None and x.shape[0] != 1:
        raise ValueError(f"--image takes one image, {spec} holds {x.shape[0]}")
    return x, None, [f"{Path(spec).name}[{i}]" for i in range(x.shape[0])]


def parse_dtype(name: str) -> torch.dtype:
    """``"float32"``/``"float64"`` -> the torch dtype; anything else is a ValueError."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype must be float32 or float64, got {name!r}")
    return table[name]


def parse_k(text: str) -> int | None:
    """``--k``: a positive integer, or ``all`` (``None``: every singular vector)."""
    if str(text).strip().lower() == "all":
        return None
    try:
        k = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--k expects a positive int or 'all', got {text!r}") from exc
    if k < 1:
        raise argparse.ArgumentTypeError(f"--k expects a positive int or 'all', got {text!r}")
    return k


def networks_from_args(args: argparse.Namespace) -> list[Network]:
    """The networks named by one or more ``--model`` (and matching ``--weights``) options."""
    names = args.model or [default_model_name()]
    weights = args.weights or []
    if weights and len(weights) != len(names):
        raise ValueError(f"give one --weights per --model ({len(names)} models, {len(weights)} weights)")
    return [load_model(n, weights=weights[i] if weights else None) for i, n in enumerate(names)]
