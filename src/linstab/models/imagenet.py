"""ImageNet residual networks (ResNet-18/34/50/101) with torchvision's exact module layout.

The modules mirror ``torchvision.models.resnet`` (v1.5: the stride of a Bottleneck sits on its
3x3 convolution), so torchvision and timm ``resnet*`` state dicts load with ``strict=True`` and
give the same logits; no torchvision import is needed. State-dict keys::

    conv1, bn1, layer{1..4}.{i}.conv1/bn1/conv2/bn2[/conv3/bn3],
    layer{k}.0.downsample.0 (1x1 conv, stride) / .1 (BN), fc

The blocks are named and laid out as torchvision's ``BasicBlock`` and ``Bottleneck``, so
:mod:`linstab.units` recognizes them and every unit gets the closed-form Jacobian.

Weights come from a user's file only (no downloads): ``torch.load(weights_only=True)`` or
``.safetensors``; pickled code is never executed and keys and shapes are checked before loading.
Without a file the weights are random and seeded (torchvision's initialization); every model
carries a :class:`ModelRecord` saying which (``model.linstab_record``).
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..io.hashing import sha256_file

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ImageNetResNet",
    "ModelRecord",
    "ARCHITECTURES",
    "TORCHVISION_FILES",
    "MIN_INPUT_SIZE",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "known_models",
    "build_imagenet_resnet",
    "load_imagenet_state_dict",
    "check_state_dict",
    "randomize_batchnorm",
]

MIN_INPUT_SIZE = 32
"""Smallest input side: the stem (7x7 conv stride 2, 3x3 max-pool stride 2) and three stride-2
stages divide the size by 32; smaller images reach the last stage as padding only."""


# --------------------------------------------------------------------------------------------
# Blocks and network (torchvision's layout and construction order)
# --------------------------------------------------------------------------------------------
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: 3x3 conv (stride) - BN - ReLU - 3x3 conv - BN, + shortcut, ReLU.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of ``conv1`` (and of the shortcut convolution).
        downsample: ``Sequential(conv1x1, BN)`` when the shape changes, else ``None``.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to a batch ``(N, C, H, W)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (v1.5): 1x1 - BN - ReLU - 3x3 (stride) - BN - ReLU - 1x1 - BN.

    Args:
        inplanes: input channels.
        planes: inner channels; the output has ``4 * planes``.
        stride: stride of ``conv2`` (the 3x3 convolution) and of the shortcut convolution.
        downsample: ``Sequential(conv1x1, BN)`` when the shape changes, else ``None``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to a batch ``(N, C, H, W)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


class ImageNetResNet(nn.Module):
    """torchvision's ``ResNet``: stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four stages, head.

    Takes *normalized* inputs (ImageNet mean/std; :func:`linstab.network.imagenet.imagenet_network` adds
    the normalization). Weights are initialized as torchvision does (He normal, fan-out, for
    convolutions; BN weight 1, bias 0; PyTorch's default for ``fc``), in the same module
    order, so ``torch.manual_seed(s); torchvision.models.resnet50()`` gives the same tensors.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: units per stage, four numbers.
        num_classes: outputs of ``fc``.
        width: channels of the stem and of stage 1 (64 in torchvision); stage ``k`` has
            ``width * 2**(k-1)`` (times 4 at a Bottleneck's output). Smaller widths are for
            fast tests only: no published weights fit them.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...] | list[int],
        num_classes: int = 1000,
        width: int = 64,
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive unit counts, got {layers}")
        if int(width) < 1 or int(num_classes) < 1:
            raise ValueError(f"width and num_classes must be positive, got {width}, {num_classes}")
        self.block = block
        self.layers = layers
        self.width = int(width)
        self.num_classes = int(num_classes)
        self.inplanes = self.width
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, self.width, layers[0])
        self.layer2 = self._make_layer(block, 2 * self.width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * self.width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * self.width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * self.width * block.expansion, self.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        units = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        units += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of normalized images ``(N, 3, H, W)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


ARCHITECTURES: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}
"""Architecture name -> (block class, units per stage), as in torchvision."""

# torch.hub names files ``<arch>-<first 8 hex digits of the SHA-256>.pth``; these are
# torchvision's ImageNet checkpoints (V2 weights are evaluated after a resize to 232, not 256).
TORCHVISION_FILES: dict[str, dict[str, object]] = {
    "resnet18-f37072fd.pth": {"arch": "resnet18", "weights": "IMAGENET1K_V1", "resize": 256},
    "resnet18-5c106cde.pth": {"arch": "resnet18", "weights": "legacy (pre-0.13 URL)", "resize": 256},
    "resnet34-b627a593.pth": {"arch": "resnet34", "weights": "IMAGENET1K_V1", "resize": 256},
    "resnet34-333f7ec4.pth": {"arch": "resnet34", "weights": "legacy (pre-0.13 URL)", "resize": 256},
    "resnet50-0676ba61.pth": {"arch": "resnet50", "weights": "IMAGENET1K_V1", "resize": 256},
    "resnet50-19c8e357.pth": {"arch": "resnet50", "weights": "legacy (pre-0.13 URL)", "resize": 256},
    "resnet50-11ad3fa6.pth": {"arch": "resnet50", "weights": "IMAGENET1K_V2", "resize": 232},
    "resnet101-63fe2227.pth": {"arch": "resnet101", "weights": "IMAGENET1K_V1", "resize": 256},
    "resnet101-5d3b4d8f.pth": {"arch": "resnet101", "weights": "legacy (pre-0.13 URL)", "resize": 256},
    "resnet101-cd907fc2.pth": {"arch": "resnet101", "weights": "IMAGENET1K_V2", "resize": 232},
}
"""Known torchvision checkpoint file names -> architecture, weights tag and eval resize."""

BN_INITS = ("torchvision", "random")


def _make(arch: str, num_classes: int, width: int, layers: tuple[int, ...] | None) -> ImageNetResNet:
    block, default_layers = ARCHITECTURES[arch]
    return ImageNetResNet(block, layers if layers is not None else default_layers, num_classes, width)


def resnet18(num_classes: int = 1000, *, width: int = 64, layers: tuple[int, ...] | None = None):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); 11,689,512 parameters. Unseeded init (global RNG)."""
    return _make("resnet18", num_classes, width, layers)


def resnet34(num_classes: int = 1000, *, width: int = 64, layers: tuple[int, ...] | None = None):
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]); 21,797,672 parameters. Unseeded init (global RNG)."""
    return _make("resnet34", num_classes, width, layers)


def resnet50(num_classes: int = 1000, *, width: int = 64, layers: tuple[int, ...] | None = None):
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); 25,557,032 parameters. Unseeded init (global RNG)."""
    return _make("resnet50", num_classes, width, layers)


def resnet101(num_classes: int = 1000, *, width: int = 64, layers: tuple[int, ...] | None = None):
    """ResNet-101 (Bottleneck, [3, 4, 23, 3]); 44,549,160 parameters. Unseeded init (global RNG)."""
    return _make("resnet101", num_classes, width, layers)


def known_models() -> list[str]:
    """Accepted names: ``torchvision:resnet18`` ... ``torchvision:resnet101`` (or without prefix)."""
    return [f"torchvision:{a}" for a in ARCHITECTURES]


# torchvision ResNets of other depths or widths: named as such when asked for, not "corrected"
_OTHER_TORCHVISION_RESNETS = (
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)


def _parse_name(name: str) -> str:
    raw = str(name).strip()
    arch = raw[len("torchvision:") :] if raw.lower().startswith("torchvision:") else raw
    arch = arch.lower()
    if arch not in ARCHITECTURES:
        plain = arch.replace("-", "").replace("_", "")
        if plain in ARCHITECTURES:
            close = [plain]
        elif arch in _OTHER_TORCHVISION_RESNETS:
            close = []
        else:
            close = difflib.get_close_matches(plain, ARCHITECTURES, n=1, cutoff=0.8)
        hint = f"; did you mean 'torchvision:{close[0]}'?" if close else ""
        if arch in _OTHER_TORCHVISION_RESNETS:
            hint = " (a torchvision architecture that linstab does not define)"
        raise ValueError(
            f"unknown ImageNet model {name!r}{hint}; known: {', '.join(known_models())} "
            f"(the prefix 'torchvision:' may be left out)"
        )
    return arch


# --------------------------------------------------------------------------------------------
# Provenance record
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRecord:
    """Where a model's weights come from; attached to models as ``model.linstab_record``.

    Attributes:
        name: ``"torchvision:resnet50"``.
        arch: ``"resnet50"``.
        weights: absolute path of the weights file, or ``None`` for random weights.
        sha256: SHA-256 of that file, or ``None``.
        seed: seed of the random initialization (``None`` when weights were loaded).
        bn: random weights only: ``"torchvision"`` (BN weight 1, bias 0, running mean 0, var 1)
            or ``"random"`` (see :func:`randomize_batchnorm`); ``None`` when loaded.
        source: ``"random"``, ``"file"`` or ``"torchvision <tag>"`` for a known torchvision file.
        resize: shorter-side resize before the 224 center crop that the weights were evaluated
            with (256; 232 for torchvision's V2 weights).
        num_classes: outputs of ``fc``.
        width: stage-1 width (64 unless reduced for tests).
        layers: units per stage.
    """

    name: str
    arch: str
    weights: str | None
    sha256: str | None
    seed: int | None
    bn: str | None
    source: str
    resize: int
    num_classes: int
    width: int
    layers: tuple[int, ...]

    @property
    def random(self) -> bool:
        """True when the weights are random (no file)."""
        return self.weights is None

    @property
    def label(self) -> str:
        """A name for outputs that says which weights, e.g.
        ``"torchvision:resnet50 (random weights, seed 0)"``.
        """
        arch = self.name
        default_layers = ARCHITECTURES[self.arch][1]
        if self.width != 64 or self.layers != default_layers:
            arch += f" (width {self.width}, layers {'-'.join(map(str, self.layers))})"
        if self.random:
            bn = "" if self.bn == "torchvision" else f", {self.bn} BN"
            return f"{arch} (random weights, seed {self.seed}{bn})"
        return f"{arch} ({Path(self.weights).name}, sha256 {self.sha256[:12]})"

    def as_dict(self) -> dict:
        """A JSON-friendly dict (includes ``random`` and ``label``)."""
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["random"] = self.random
        d["label"] = self.label
        return d


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
def randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm seeded non-trivial statistics and affine parameters, in place.

    ``running_mean ~ 0.1 N(0, 1)``, ``running_var ~ 0.5 + U(0, 1)``, ``weight ~ 0.5 + U(0, 1)``,
    ``bias ~ 0.1 N(0, 1)``, drawn per module in order from ``torch.Generator().manual_seed(seed)``
    (the recipe of linstab's test networks). With torchvision's BN initialization (identity
    statistics, zero bias) a random ReLU network is positively homogeneous; this breaks that
    symmetry so that masks and BN scales differ between channels as in a trained network.
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                if m.weight is not None:
                    m.weight.copy_(0.5 + torch.rand(c, generator=g))
                    m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model


def load_imagenet_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: ``.safetensors``, or ``torch.load(..., weights_only=True)``.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped and a ``module.``
    prefix (``DataParallel``) removed.

    Raises:
        FileNotFoundError: for a missing file.
        IsADirectoryError: for a folder.
        ValueError: for a file holding pickled objects other than tensors (never executed),
            or anything but a mapping of names to tensors.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a state-dict file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = dict(load_file(str(path)))
        except Exception as exc:  # noqa: BLE001 - SafetensorError and OS errors alike
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
            if "Unsupported global" in detail:
                detail = detail.split(" was not an allowed global")[0]
                raise ValueError(
                    f"refusing {path}: it holds pickled objects other than tensors, which linstab "
                    f"never executes (torch.load(weights_only=True): {detail})"
                ) from None
            raise ValueError(f"{path} is not a readable PyTorch checkpoint ({detail[:200]})") from None
        except (RuntimeError, EOFError, OSError) as exc:
            raise ValueError(f"{path} is not a readable PyTorch or safetensors file: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {bad[:5]}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _guess_architecture(sd: dict[str, torch.Tensor]) -> str:
    counts = []
    for k in range(1, 5):
        idx = {int(m.group(1)) for key in sd if (m := re.match(rf"layer{k}\.(\d+)\.", key))}
        counts.append(max(idx) + 1 if idx else 0)
    if not any(counts):
        return "no torchvision-style ResNet units (layer1.0...) in the file"
    block = "Bottleneck" if any(".conv3." in key for key in sd) else "BasicBlock"
    guess = [a for a, (b, n) in ARCHITECTURES.items() if b.__name__ == block and tuple(counts) == n]
    fc = sd.get("fc.weight")
    head = f", fc {tuple(fc.shape)}" if fc is not None else ""
    what = f"{block}, layers {counts}{head}"
    return f"the file looks like {guess[0]} ({what})" if guess else f"the file has {what}"


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Check keys, shapes and values of ``sd`` against ``model`` before loading it.

    ``num_batches_tracked`` buffers may be missing (old torchvision files lack them).

    Raises:
        ValueError: naming missing, unexpected and mis-shaped keys (and the architecture the
            file seems to hold), non-floating tensors where floats belong, or NaN/inf values.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [
        f"{k}: file {tuple(sd[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {what} keys: {', '.join(items[:5])}{more}")
        arch = getattr(model, "linstab_arch", type(model).__name__)
        raise ValueError(
            f"{source} does not fit {arch}: " + "; ".join(parts) + f". {_guess_architecture(sd)}."
        )
    wrong_type = [k for k, v in expected.items() if v.is_floating_point() and not sd[k].is_floating_point()]
    if wrong_type:
        raise ValueError(f"{source}: integer tensors where floats belong: {wrong_type[:5]}")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{source}: NaN or infinite values in {bad[:5]}")


def build_imagenet_resnet(
    name: str,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    bn: str = "torchvision",
    num_classes: int | None = None,
    width: int = 64,
    layers: tuple[int, ...] | None = None,
) -> ImageNetResNet:
    """An ImageNet ResNet in eval mode, with weights from a file or seeded random weights.

    Args:
        name: ``"torchvision:resnet50"`` or ``"resnet50"`` (18, 34, 50, 101).
        weights: a state-dict file (torchvision/timm layout: ``.pth``/``.pt`` read with
            ``torch.load(weights_only=True)``, or ``.safetensors``); ``None`` for random weights.
            Nothing is downloaded. A file named like a known torchvision checkpoint
            (``resnet50-0676ba61.pth``) must have the SHA-256 prefix its name states.
        seed: random weights: seed of the initialization (torchvision's: He normal fan-out
            convolutions, BN weight 1 / bias 0, default ``fc``). Drawn inside
            ``torch.random.fork_rng``, so the global RNG is left as it was.
        bn: random weights: ``"torchvision"`` (BN as initialized: identity statistics) or
            ``"random"`` (:func:`randomize_batchnorm` with ``seed``, for a non-degenerate
            linearization).
        num_classes: outputs of ``fc``; default: from the file's ``fc.weight``, else 1000.
        width: stage-1 width (64; smaller only for fast tests, random weights).
        layers: units per stage (default: the architecture's; other values for tests).

    Returns:
        The model, in eval mode, with ``model.linstab_record`` (a :class:`ModelRecord`).

    Raises:
        ValueError: unknown name or ``bn``; a file that does not fit the architecture (missing,
            unexpected or mis-shaped keys), holds pickled code, or contradicts its torchvision
            file name.
        FileNotFoundError: a missing weights file.
        IsADirectoryError: a folder given as the weights file.
    """
    arch = _parse_name(name)
    if bn not in BN_INITS:
        raise ValueError(f"bn must be one of {BN_INITS}, got {bn!r}")
    sd = None
    digest = None
    path = None
    known = None
    if weights is not None:
        if bn != "torchvision":
            raise ValueError("bn='random' applies to random weights only, not to a weights file")
        path = Path(weights).expanduser().resolve()
        if path.is_dir():
            raise IsADirectoryError(
                f"weights {path} for {name!r} is a folder: give the state-dict file (.pth, .pt or "
                ".safetensors) itself"
            )
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} for {name!r} does not exist")
        digest = sha256_file(path)
        known = TORCHVISION_FILES.get(path.name)
        if known is not None:
            prefix = path.name.rsplit("-", 1)[1].split(".")[0]
            if not digest.startswith(prefix):
                raise ValueError(
                    f"refusing {path}: its name is torchvision's {known['arch']} "
                    f"{known['weights']} checkpoint, whose SHA-256 starts with {prefix}, but the "
                    f"file's is {digest}"
                )
            if known["arch"] != arch:
                raise ValueError(f"{path.name} holds torchvision's {known['arch']} weights, not {arch}")
        sd = load_imagenet_state_dict(path)
        if num_classes is None and isinstance(sd.get("fc.weight"), torch.Tensor):
            num_classes = int(sd["fc.weight"].shape[0])
    num_classes = 1000 if num_classes is None else int(num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _make(arch, num_classes, width, layers)
    model.linstab_arch = arch
    if sd is not None:
        check_state_dict(model, sd, str(path))
        model.load_state_dict(sd, strict=False)  # keys checked above; num_batches_tracked optional
    elif bn == "random":
        randomize_batchnorm(model, seed)
    model.eval()
    model.linstab_record = ModelRecord(
        name=f"torchvision:{arch}",
        arch=arch,
        weights=str(path) if path is not None else None,
        sha256=digest,
        seed=None if sd is not None else int(seed),
        bn=None if sd is not None else bn,
        source=("random" if sd is None else f"torchvision {known['weights']}" if known else "file"),
        resize=int(known["resize"]) if known else 256,
        num_classes=num_classes,
        width=model.width,
        layers=model.layers,
    )
    return model
