"""ImageNet residual networks as :class:`linstab.Network`: models, weights, preprocessing.

Quick start::

    from linstab.network.imagenet import imagenet_network
    from linstab.data.imagenet import preprocess
    net = imagenet_network("torchvision:resnet50", weights="resnet50-0676ba61.pth")
    x = preprocess("cat.jpg")                 # (1, 3, 224, 224) in [0, 1]
    lin = net.linearize(x[0], dtype=torch.float64)
    J = lin.unit(2, 1)                                 # closed-form Jacobian of layer2.0

Without ``weights`` the network has seeded random weights and says so (``net.record.random``,
``net.name`` contains "random weights"). Models: :mod:`linstab.models.imagenet`;
preprocessing: :mod:`linstab.data.imagenet`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..data.images import check_images
from ..io.validate import is_int
from ..models.imagenet import MIN_INPUT_SIZE, ModelRecord, build_imagenet_resnet
from .view import Network

_HINT = (
    "linstab.data.preprocess(images, size={size}) turns image files, PIL images and "
    "uint8/float arrays of any size into such a batch (shorter side to {resize}, center crop {size})"
)


def _input_hw(input_size) -> tuple[int, int]:
    if is_int(input_size):
        hw = (int(input_size), int(input_size))
    elif isinstance(input_size, tuple | list) and len(input_size) == 2 and all(map(is_int, input_size)):
        hw = (int(input_size[0]), int(input_size[1]))
    else:
        raise ValueError(f"input_size must be an int or (height, width), got {input_size!r}")
    if min(hw) < MIN_INPUT_SIZE:
        raise ValueError(
            f"input_size {hw[0]}x{hw[1]} is too small: an ImageNet ResNet divides the size by 32 "
            f"(stem conv and max-pool, three stride-2 stages); use at least "
            f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (224x224 is the standard size)"
        )
    return hw


class ImageNetNetwork(Network):
    """A :class:`linstab.Network` over an ImageNet ResNet, taking images of one fixed size.

    Units are discovered (and their shapes recorded) at ``input_size``, so every image given to
    :meth:`predict`, :meth:`activations` and :meth:`linearize` must have that size; anything
    else is refused with a pointer to :func:`preprocess`.

    Args:
        model: the network (normalized inputs), in eval mode: an :class:`ImageNetResNet` or any
            torchvision-style ResNet.
        input_size: image size, an int or ``(height, width)``, at least 32.
        name: label for outputs (default: the model record's label, which says "random
            weights" for random weights).
        mean: normalization mean (ImageNet's by default).
        std: normalization std.
        record: provenance (default: ``model.linstab_record`` if present).

    Attributes:
        record: the :class:`ModelRecord` (``None`` for a foreign model without one).
        input_size: ``(height, width)``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        input_size: int | tuple[int, int] = 224,
        name: str | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        record: ModelRecord | None = None,
    ) -> None:
        hw = _input_hw(input_size)
        record = record if record is not None else getattr(model, "linstab_record", None)
        if name is None:
            name = record.label if record is not None else type(model).__name__
        super().__init__(
            model,
            mean,
            std,
            name=name,
            input_shape=(3, *hw),
            sha256=record.sha256 if record is not None else None,
        )
        self.record = record
        self.input_size = hw

    @property
    def random_weights(self) -> bool | None:
        """True for random weights, False for weights from a file, None when unknown."""
        return None if self.record is None else self.record.random

    def check_input(self, images, *, name: str = "images") -> torch.Tensor:
        """Validate images (``(3, H, W)`` / ``(N, 3, H, W)``, float in [0, 1], this network's size).

        Raises:
            ValueError: wrong shape or size (the message points to :func:`preprocess`), NaN/inf,
                values outside [0, 1].
            TypeError: a non-float input.
        """
        h, w = self.input_size
        resize = round(max(h, w) * 256 / 224)
        hint = _HINT.format(size=h if h == w else (h, w), resize=resize)
        try:
            x = check_images(images, name=name, channels=3)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}. {hint}") from None
        ih, iw = x.shape[-2:]
        if min(ih, iw) < MIN_INPUT_SIZE:
            raise ValueError(
                f"{name}: {ih}x{iw} images are too small for an ImageNet ResNet (at least "
                f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}: the stem and three stride-2 stages divide the "
                f"size by 32); this network takes {h}x{w}. {hint}"
            )
        if (ih, iw) != (h, w):
            raise ValueError(
                f"{name}: {ih}x{iw} images, but this network takes {h}x{w} (its units were "
                f"discovered at that size). {hint}; or build the network with "
                f"input_size=({ih}, {iw})"
            )
        return x


def imagenet_network(
    model: str | nn.Module,
    *,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    bn: str = "torchvision",
    input_size: int | tuple[int, int] = 224,
    name: str | None = None,
    num_classes: int | None = None,
    width: int = 64,
    layers: tuple[int, ...] | None = None,
) -> ImageNetNetwork:
    """A :class:`linstab.Network` for an ImageNet ResNet, with ImageNet mean/std.

    Args:
        model: a name (``"torchvision:resnet50"`` or ``"resnet50"``; built by
            :func:`build_imagenet_resnet`) or a model in eval mode taking normalized inputs.
        weights: with a name: a state-dict file (``.pth``/``.pt`` via
            ``torch.load(weights_only=True)``, or ``.safetensors``); ``None``: random weights.
        seed: random weights: seed of the initialization (and of ``bn="random"``).
        bn: random weights: ``"torchvision"`` or ``"random"`` BN statistics (see
            :func:`build_imagenet_resnet`).
        input_size: the image size the network takes (int or ``(height, width)``, >= 32).
        name: label for outputs (default: the record's label, e.g.
            ``"torchvision:resnet50 (random weights, seed 0)"``).
        num_classes: classes of the head (default: from the weights file, else 1000).
        width: base width of the stem and first stage (64 for torchvision's networks).
        layers: units per stage (default: the architecture's).

    Raises:
        ValueError: unknown name, weights that do not fit, a model in training mode, an
            ``input_size`` below 32, or ``weights`` given with a model object.
    """
    if isinstance(model, str):
        with torch.inference_mode(False):  # normal weights also under a caller's inference mode
            model = build_imagenet_resnet(
                model, weights, seed, bn=bn, num_classes=num_classes, width=width, layers=layers
            )
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a name or a torch.nn.Module, got {type(model).__name__}")
    elif weights is not None:
        raise ValueError("weights= applies to a model name; load the state dict into your model yourself")
    return ImageNetNetwork(model, input_size=input_size, name=name)
