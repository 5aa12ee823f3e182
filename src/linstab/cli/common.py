"""Options shared by the commands: model, images, dtype, k."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..data.selection import select_images
from ..io.validate import check_first_folder_writable
from ..models.registry import default_model_name
from ..network.loading import load_model
from ..network.view import Network


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model NAME`` and ``--weights PATH``."""
    p.add_argument(
        "--model",
        default=None,
        help="registered model name (see 'linstab models'), a model file trained by linstab "
        "(FILE.safetensors with its JSON sidecar) or a factory 'module:function' returning a "
        "linstab.Network; default: the best embedded model, else resnet56-akamaster",
    )
    p.add_argument("--weights", default=None, help="explicit weights file for --model")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="ImageNet networks (torchvision:resnet50, ...): image size, default 224; image files "
        "are resized and center-cropped to it",
    )


def network_from_args(args: argparse.Namespace):
    """Load the :class:`~linstab.network.Network` named by ``--model``/``--weights``."""
    size = getattr(args, "input_size", None)
    return load_model(args.model or default_model_name(), weights=args.weights, input_size=size)


def provenance(net: Network, image_ids: list[str]) -> dict:
    """What an output was computed from: linstab's version, the model's name and what
    ``--model`` said (registry name, file or factory), the SHA-256 of its weights file and of its
    state dict, and the image ids (written into JSON/NPZ outputs).
    """
    from .._version import __version__

    return {
        "linstab": __version__,
        "model": net.name,
        "model_source": net.source,
        "weights_sha256": net.sha256,
        "state_sha256": net.state_sha256(),
        "images": list(image_ids),
    }


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


def images_from_args(
    args: argparse.Namespace, net: Network | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Images selected by ``--image``/``--images`` (see :func:`~linstab.data.select_images`).

    Args:
        args: parsed options.
        net: the network the images are for; networks with a fixed input size (ImageNet)
            get files resized and center-cropped to it.

    Returns:
        ``(images, labels, ids)``: ``(N, C, H, W)`` in [0, 1], labels (``None`` for user
        files) and a readable id per image.
    """
    spec = getattr(args, "images", None)
    single = spec is None
    if spec is None:
        spec = getattr(args, "image", "0")
    sel = select_images(str(spec), single=single, size=getattr(net, "input_size", None))
    if net is not None and tuple(sel.images.shape[2:]) != tuple(net.input_shape[1:]):
        h, w = sel.images.shape[2:]
        nh, nw = net.input_shape[1:]
        raise ValueError(  # ImageNet networks resize files and refuse CIFAR-10 images earlier
            f"the images of {spec!r} are {h} x {w}; {net.name} takes {nh} x {nw} images: resize them "
            f"to {nh} x {nw} (only ImageNet networks resize images, to --input-size)"
        )
    return sel.images, sel.labels, sel.ids


def parse_dtype(name: str) -> torch.dtype:
    """``"float32"``/``"float64"`` -> the torch dtype; anything else is a ValueError."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype must be float32 or float64, got {name!r}")
    return table[name]


def _check_folders_above(text: str, paths) -> None:
    """:func:`~linstab.io.validate.check_first_folder_writable` as an argparse error."""
    try:
        check_first_folder_writable(paths)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from None


def out_file(text: str) -> str:
    """An argparse type: an output file path (not an existing folder, nor under a file)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a file name, got an empty string")
    p = Path(text).expanduser()
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the name of a file to write")
    if p.exists() and not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: the existing file cannot be overwritten (not writable)")
    _check_folders_above(text, p.absolute().parents)
    return text


def out_file_of(*suffixes: str):
    """An argparse type: an output file path (as :func:`out_file`) ending in one of ``suffixes``
    (case-insensitive), e.g. ``out_file_of(".json", ".csv")``.
    """

    def check(text: str) -> str:
        text = out_file(text)
        if Path(text).suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"expected a file ending in {' or '.join(suffixes)}, got {text!r}"
            )
        return text

    check.__name__ = "file"  # argparse names the type in its messages
    return check


def out_dir(text: str) -> str:
    """An argparse type: an output folder path (not an existing file, nor under one)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string")
    p = Path(text).expanduser()
    _check_folders_above(text, (p, *p.absolute().parents))
    return text


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from exc
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def parse_k(text: str) -> int | None:
    """``--k``: a positive integer, or ``all`` (``None``: every singular vector)."""
    if str(text).strip().lower() == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--k expects a positive int or 'all', got {text!r}") from None


def networks_from_args(args: argparse.Namespace) -> list[Network]:
    """The networks named by one or more ``--model`` (and matching ``--weights``) options.

    Raises:
        ValueError: a ``--weights`` count that does not match, or two networks of the same name
            (a figure keys its panels by the name: their bars and lines would be drawn as one).
    """
    names = args.model or [default_model_name()]
    weights = args.weights or []
    if weights and len(weights) != len(names):
        raise ValueError(f"give one --weights per --model ({len(names)} models, {len(weights)} weights)")
    nets = [load_model(n, weights=weights[i] if weights else None) for i, n in enumerate(names)]
    seen: dict[str, str] = {}
    for given, net in zip(names, nets, strict=True):
        if net.name in seen and seen[net.name] == given:
            raise ValueError(f"--model {given} is given twice: expected each model once")
        if net.name in seen:
            raise ValueError(
                f"--model {seen[net.name]} and --model {given} are both the network {net.name!r}: "
                "expected models of distinct names (the figure tells them apart by name)"
            )
        seen[net.name] = given
    return nets


def check_distinct_outputs(outputs: dict[str, list[str | os.PathLike]]) -> None:
    """Refuse two options that would write the same file (the later would overwrite the earlier).

    Args:
        outputs: option (e.g. ``"--out"``) -> the files it writes (``None`` entries: not given).

    Raises:
        ValueError: two options write one file, naming both and the file.
    """
    owner: dict[Path, tuple[str, str]] = {}
    for flag, paths in outputs.items():
        for p in paths:
            if p is None:
                continue
            key = Path(os.path.abspath(Path(p).expanduser()))
            if key in owner and owner[key][0] != flag:
                raise ValueError(
                    f"{owner[key][0]} and {flag} would both write {p}: expected a different file for each"
                )
            owner.setdefault(key, (flag, str(p)))
