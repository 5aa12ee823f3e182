"""Building blocks of linstab's CIFAR residual networks (pytorchcv module layout) and the
normalizing wrapper.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

CIFAR10_MEAN_AKAMASTER = (0.485, 0.456, 0.406)


CIFAR10_STD_AKAMASTER = (0.229, 0.224, 0.225)


CIFAR10_MEAN_PYTORCHCV = (0.4914, 0.4822, 0.4465)


CIFAR10_STD_PYTORCHCV = (0.2023, 0.1994, 0.2010)


class ConvBlock(nn.Module):
    """Convolution, batch norm and an optional elementwise activation (pytorchcv naming).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        padding: zero padding.
        activation: an elementwise activation module, or ``None`` for none.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        if activation is not None:
            self.activ = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module to a batch ``(N, C, H, W)``."""
        x = self.bn(self.conv(x))
        activ = getattr(self, "activ", None)
        return x if activ is None else activ(x)


class SubsamplePad(nn.Module):
    """Option-A shortcut: ``x[:, :, ::stride, ::stride]`` zero-padded in channels.

    Args:
        pad_front: zero channels added before the input channels.
        pad_back: zero channels added after them.
        stride: spatial subsampling step.
    """

    def __init__(self, pad_front: int, pad_back: int, stride: int = 2) -> None:
        super().__init__()
        self.pad_front = int(pad_front)
        self.pad_back = int(pad_back)
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module to a batch ``(N, C, H, W)``."""
        s = self.stride
        return nn.functional.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        """The module's settings for ``repr``."""
        return f"pad_front={self.pad_front}, pad_back={self.pad_back}, stride={self.stride}"


class ResidualUnit(nn.Module):
    """A residual unit ``x_{k+1} = activ(alpha * S(x_k) + body(x_k))``.

    ``body`` is a chain of :class:`ConvBlock` (all but the last with an activation); ``S`` is
    the identity, :class:`SubsamplePad` (option A) or a :class:`ConvBlock` without activation
    (option B, stored as ``identity_conv`` as in pytorchcv).

    Args:
        body: ordered ConvBlocks named ``conv1``, ``conv2``, ...
        shortcut: ``None`` (identity), a :class:`SubsamplePad` or a :class:`ConvBlock`.
        activation: the activation after the addition.
        alpha: the skip-connection scale (1 for standard ResNets).
    """

    def __init__(
        self,
        body: nn.Sequential,
        shortcut: nn.Module | None = None,
        activation: nn.Module | None = None,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        self.body = body
        if isinstance(shortcut, ConvBlock):
            self.identity_conv = shortcut
        elif shortcut is not None:
            self.identity_pad = shortcut
        self.activ = activation if activation is not None else nn.ReLU()
        self.alpha = float(alpha)

    @property
    def shortcut(self) -> nn.Module | None:
        """The shortcut module, or ``None`` for the identity."""
        return getattr(self, "identity_conv", None) or getattr(self, "identity_pad", None)

    @property
    def shortcut_kind(self) -> str:
        """``"identity"``, ``"subsample-pad"`` (option A) or ``"conv-bn"`` (option B)."""
        sc = self.shortcut
        if sc is None:
            return "identity"
        return "conv-bn" if isinstance(sc, ConvBlock) else "subsample-pad"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module to a batch ``(N, C, H, W)``."""
        sc = self.shortcut
        skip = x if sc is None else sc(x)
        y = self.body(x)
        if self.alpha != 1.0:
            skip = self.alpha * skip
        return self.activ(skip + y)

    def extra_repr(self) -> str:
        """The module's settings for ``repr``."""
        return f"alpha={self.alpha}" if self.alpha != 1.0 else ""


def basic_unit(in_channels: int, out_channels: int, stride: int, shortcut: str) -> ResidualUnit:
    """A BasicBlock unit: conv3x3-BN-ReLU-conv3x3-BN, shortcut, ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 in down-sampling units).
        shortcut: ``"A"`` or ``"B"``: the shortcut used when the shape changes.
    """
    body = nn.Sequential(
        OrderedDict(
            conv1=ConvBlock(in_channels, out_channels, 3, stride, 1, activation=nn.ReLU()),
            conv2=ConvBlock(out_channels, out_channels, 3, 1, 1),
        )
    )
    sc: nn.Module | None = None
    if stride != 1 or in_channels != out_channels:
        if shortcut == "A":
            extra = out_channels - in_channels
            sc = SubsamplePad(extra // 2, extra - extra // 2, stride)
        else:
            sc = ConvBlock(in_channels, out_channels, 1, stride, 0)
    return ResidualUnit(body, sc, nn.ReLU())


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2``: stem, three stages of ``n`` BasicBlock units, head.

    The module takes *normalized* inputs; :class:`Normalize` in front of it maps [0, 1] images.

    Args:
        depth: 20, 32, 44, 56, 110, ... (``(depth - 2) % 6 == 0``).
        shortcut: ``"A"`` (akamaster) or ``"B"`` (pytorchcv).
        num_classes: number of classes.
        widths: channels of the three stages.
    """

    def __init__(
        self,
        depth: int,
        shortcut: str = "B",
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 56, 110, ...); got {depth!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B'; got {shortcut!r}")
        self.depth = depth
        self.shortcut_option = shortcut
        n = (depth - 2) // 6
        self.features = nn.Sequential()
        self.features.add_module("init_block", ConvBlock(3, widths[0], 3, 1, 1, activation=nn.ReLU()))
        cin = widths[0]
        for s, width in enumerate(widths):
            stage = nn.Sequential()
            for u in range(n):
                stride = 2 if (u == 0 and s > 0) else 1
                stage.add_module(f"unit{u + 1}", basic_unit(cin, width, stride, shortcut))
                cin = width
            self.features.add_module(f"stage{s + 1}", stage)
        self.features.add_module("final_pool", nn.AdaptiveAvgPool2d(1))
        self.output = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module to a batch ``(N, C, H, W)``."""
        return self.output(torch.flatten(self.features(x), 1))


class Normalize(nn.Module):
    """Per-channel input normalization ``(x - mean) / std`` in front of a model.

    Args:
        model: the wrapped network (takes normalized inputs).
        mean: per-channel means.
        std: per-channel standard deviations.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module to a batch ``(N, C, H, W)``."""
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def cifar_resnet(depth: int, shortcut: str = "B", num_classes: int = 10) -> CifarResNet:
    """Build an (untrained) CIFAR ResNet; see :class:`CifarResNet`."""
    return CifarResNet(depth, shortcut, num_classes)
