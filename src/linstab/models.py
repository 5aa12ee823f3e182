"""CIFAR residual networks, the checkpoint registry and weight loading.

linstab's own module layout follows pytorchcv (``features.init_block``,
``features.stageS.unitK.body.convI.{conv,bn}``, ``identity_conv``, ``output``), so pytorchcv
state dicts load as they are; akamaster checkpoints are mapped onto it.

Shortcut variants of the down-sampling units:

* ``"A"`` (akamaster): ``x[:, :, ::2, ::2]`` zero-padded by ``planes // 4`` channels on each
  side, no parameters;
* ``"B"`` (pytorchcv, the paper's networks): a 1x1 stride-2 convolution followed by batch norm.

Checkpoints are untrusted input: they are read with ``torch.load(..., weights_only=True)`` or
from ``.safetensors``; pickled code is never executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "ConvBlock",
    "SubsamplePad",
    "ResidualUnit",
    "CifarResNet",
    "Normalize",
    "CheckpointSpec",
    "REGISTRY",
    "cifar_resnet",
    "resolve_weights",
    "load_state_dict_file",
    "convert_akamaster_state_dict",
    "sha256_file",
]

CIFAR10_MEAN_AKAMASTER = (0.485, 0.456, 0.406)
CIFAR10_STD_AKAMASTER = (0.229, 0.224, 0.225)
CIFAR10_MEAN_PYTORCHCV = (0.4914, 0.4822, 0.4465)
CIFAR10_STD_PYTORCHCV = (0.2023, 0.1994, 0.2010)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
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
        s = self.stride
        return nn.functional.pad(
            x[:, :, ::s, ::s], (0, 0, 0, 0, self.pad_front, self.pad_back)
        )

    def extra_repr(self) -> str:
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
        sc = self.shortcut
        skip = x if sc is None else sc(x)
        y = self.body(x)
        if self.alpha != 1.0:
            skip = self.alpha * skip
        return self.activ(skip + y)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" if self.alpha != 1.0 else ""


def basic_unit(
    in_channels: int, out_channels: int, stride: int, shortcut: str
) -> ResidualUnit:
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
        self.features.add_module(
            "init_block", ConvBlock(3, widths[0], 3, 1, 1, activation=nn.ReLU())
        )
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
        return self.output(torch.flatten(self.features(x), 1))


class Normalize(nn.Module):
    """Per-channel input normalization ``(x - mean) / std`` in front of a model.

    Args:
        model: the wrapped network (takes normalized inputs).
        mean: per-channel means.
        std: per-channel standard deviations.
    """

    def __init__(
        self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def cifar_resnet(depth: int, shortcut: str = "B", num_classes: int = 10) -> CifarResNet:
    """Build an (untrained) CIFAR ResNet; see :class:`CifarResNet`."""
    return CifarResNet(depth, shortcut, num_classes)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointSpec:
    """A named pre-trained checkpoint.

    Attributes:
        name: registry name, e.g. ``"resnet56-akamaster"``.
        depth: network depth.
        shortcut: ``"A"`` or ``"B"``.
        file_name: file name searched for in ``LINSTAB_WEIGHTS_DIR`` and the cache.
        sha256: expected SHA-256 of the file (``None`` where only ``sha1`` is published).
        url: upstream download address.
        published_error: published CIFAR-10 test error in percent.
        source: ``"akamaster"``, ``"pytorchcv"`` or ``"linstab"``.
        fmt: file format: ``"akamaster"``, ``"pytorchcv-zip"``, ``"pytorchcv"`` or
            ``"safetensors"``.
        mean: input normalization mean.
        std: input normalization std.
        sha1: expected SHA-1 (pytorchcv publishes SHA-1 of the unzipped ``.pth``).
        package_data: True when the file ships inside the linstab package.
    """

    name: str
    depth: int
    shortcut: str
    file_name: str
    sha256: str | None
    url: str | None
    published_error: float | None
    source: str
    fmt: str
    mean: tuple[float, ...] = CIFAR10_MEAN_AKAMASTER
    std: tuple[float, ...] = CIFAR10_STD_AKAMASTER
    sha1: str | None = None
    package_data: bool = False
    notes: str = field(default="", compare=False)


_AKA_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_CV_URL = "https://github.com/osmr/imgclsmob/releases/download/v0.0.163/"

REGISTRY: dict[str, CheckpointSpec] = {}


def _register(spec: CheckpointSpec) -> None:
    REGISTRY[spec.name] = spec


for _d, _sha, _err in [
    (20, "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 8.27),
    (32, "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", 7.37),
    (44, "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4", 6.90),
    (56, "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 6.61),
]:
    _fname = f"resnet{_d}-{_sha[:8]}.th"
    _register(
        CheckpointSpec(
            name=f"resnet{_d}-akamaster",
            depth=_d,
            shortcut="A",
            file_name=_fname,
            sha256=_sha,
            url=_AKA_URL + _fname,
            published_error=_err,
            source="akamaster",
            fmt="akamaster",
        )
    )

for _d, _sha1, _err in [
    (20, "9b0024ac4c2f374cde2c5052e0d0344a75871cdb", 5.97),
    (56, "628c42a26fe347b84060136212e018df2bb35e0f", 4.52),
    (110, "4d6ca1fc02eaeed724f4f596011e391528536049", 3.69),
]:
    _fname = f"resnet{_d}_cifar10-{round(_err * 100):04d}-{_sha1[:8]}.pth"
    _register(
        CheckpointSpec(
            name=f"resnet{_d}-pytorchcv",
            depth=_d,
            shortcut="B",
            file_name=_fname,
            sha256=None,
            url=_CV_URL + _fname + ".zip",
            published_error=_err,
            source="pytorchcv",
            fmt="pytorchcv",
            mean=CIFAR10_MEAN_PYTORCHCV,
            std=CIFAR10_STD_PYTORCHCV,
            sha1=_sha1,
            notes="pytorchcv publishes the SHA-1 of the unzipped .pth; the .zip is unpacked.",
        )
    )


def _register_package_weights() -> None:
    """Register linstab's own trained models shipped as package data (JSON sidecars)."""
    try:
        root = resources.files("linstab") / "weights"
        entries = [p for p in root.iterdir() if p.name.endswith(".json")]
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        return
    for entry in sorted(entries, key=lambda p: p.name):
        meta = json.loads(entry.read_text())
        reg = meta.get("registry")
        if not reg:
            continue
        _register(
            CheckpointSpec(
                name=reg["name"],
                depth=int(reg["depth"]),
                shortcut=reg["shortcut"],
                file_name=reg["file_name"],
                sha256=reg["sha256"],
                url=None,
                published_error=reg.get("test_error_jpeg"),
                source="linstab",
                fmt="safetensors",
                mean=tuple(reg.get("mean", CIFAR10_MEAN_PYTORCHCV)),
                std=tuple(reg.get("std", CIFAR10_STD_PYTORCHCV)),
                package_data=True,
                notes="trained by linstab on the lossy JPEG CIFAR-10 set",
            )
        )


_register_package_weights()


# --------------------------------------------------------------------------------------------
# Weight resolution and loading
# --------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha1_file(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    """linstab's cache folder: ``$LINSTAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/linstab`` or
    ``~/.cache/linstab``."""
    env = os.environ.get("LINSTAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "linstab"


def cache_dir() -> Path:
    """The user cache directory for downloaded weights (``cache_root() / "weights"``)."""
    return cache_root() / "weights"


def _verify(spec: CheckpointSpec, path: Path) -> None:
    if spec.sha256 is not None:
        got = sha256_file(path)
        if got != spec.sha256:
            raise ValueError(
                f"refusing weights file {path} for {spec.name!r}: SHA-256 is {got}, "
                f"expected {spec.sha256}"
            )
    elif spec.sha1 is not None:
        target = path
        if path.suffix == ".zip":
            return  # the member is checked after unpacking, in load_state_dict_file
        got = _sha1_file(target)
        if got != spec.sha1:
            raise ValueError(
                f"refusing weights file {path} for {spec.name!r}: SHA-1 is {got}, "
                f"expected {spec.sha1}"
            )


def _find_in_dir(root: Path, names: list[str]) -> Path | None:
    if not root.is_dir():
        return None
    for name in names:
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
    return None


def _candidate_names(spec: CheckpointSpec) -> list[str]:
    names = [spec.file_name]
    if spec.fmt == "pytorchcv":
        names.append(spec.file_name + ".zip")
    return names


def resolve_weights(
    spec: CheckpointSpec, weights: str | os.PathLike | None = None, *, download: bool = True
) -> Path:
    """Find (or fetch) the weights file of a registered checkpoint and verify its checksum.

    Order: explicit ``weights`` path; ``$LINSTAB_WEIGHTS_DIR`` searched recursively by file name;
    linstab's package data; the user cache directory; download from the upstream URL.

    Args:
        spec: the registry entry.
        weights: an explicit file path.
        download: try the upstream URL when nothing local is found.

    Returns:
        The verified file path.

    Raises:
        FileNotFoundError: when the file cannot be found or fetched; the message lists the
            ways to supply it.
        ValueError: when the file's checksum differs from the registry's.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} for {spec.name!r} does not exist")
        _verify(spec, path)
        return path
    names = _candidate_names(spec)
    env = os.environ.get("LINSTAB_WEIGHTS_DIR")
    if env:
        hit = _find_in_dir(Path(env).expanduser(), names)
        if hit is not None:
            _verify(spec, hit)
            return hit
    if spec.package_data:
        ref = resources.files("linstab") / "weights" / spec.file_name
        if ref.is_file():
            path = Path(str(ref))
            _verify(spec, path)
            return path
    cdir = cache_dir()
    hit = _find_in_dir(cdir, names)
    if hit is not None:
        _verify(spec, hit)
        return hit
    reason = "no upstream URL is known"
    if download and spec.url:
        target = cdir / spec.url.rsplit("/", 1)[-1]
        try:
            _download(spec.url, target)
        except OSError as exc:  # URLError is an OSError
            reason = f"download from {spec.url} failed: {exc}"
        else:
            _verify(spec, target)
            return target
    raise FileNotFoundError(
        f"weights file {spec.file_name!r} for model {spec.name!r} not found ({reason}). "
        "Supply it in one of three ways: (1) pass weights=PATH (CLI: --weights PATH); "
        "(2) set LINSTAB_WEIGHTS_DIR to a directory containing it (searched recursively); "
        f"(3) put it in the cache directory {cdir}."
    )


def _download(url: str, target: Path, timeout: float = 20.0) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:  # noqa: S310
        while chunk := resp.read(1 << 20):
            f.write(chunk)
    os.replace(tmp, target)


def convert_akamaster_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map akamaster keys (``module.layer2.0.conv1.weight``) onto linstab/pytorchcv keys.

    Args:
        sd: the akamaster ``state_dict`` (with or without the ``module.`` prefix).

    Returns:
        A state dict for :class:`CifarResNet` with shortcut ``"A"``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, val in sd.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        parts = k.split(".")
        if parts[0] == "conv1":
            nk = "features.init_block.conv." + ".".join(parts[1:])
        elif parts[0] == "bn1":
            nk = "features.init_block.bn." + ".".join(parts[1:])
        elif parts[0] == "linear":
            nk = "output." + ".".join(parts[1:])
        elif parts[0].startswith("layer"):
            stage = int(parts[0][5:])
            unit = int(parts[1]) + 1
            layer = parts[2]
            rest = ".".join(parts[3:])
            prefix = f"features.stage{stage}.unit{unit}."
            table = {
                "conv1": "body.conv1.conv.",
                "bn1": "body.conv1.bn.",
                "conv2": "body.conv2.conv.",
                "bn2": "body.conv2.bn.",
            }
            if layer in table:
                nk = prefix + table[layer] + rest
            elif layer == "shortcut":
                # option-B style shortcut Sequential(conv, bn) in akamaster's code
                idx = int(parts[3])
                nk = prefix + ("identity_conv.conv." if idx == 0 else "identity_conv.bn.")
                nk += ".".join(parts[4:])
            else:
                raise ValueError(f"unexpected akamaster key {key!r}")
        else:
            raise ValueError(f"unexpected akamaster key {key!r}")
        out[nk] = val
    return out


def load_state_dict_file(path: str | os.PathLike, fmt: str, sha1: str | None = None) -> dict:
    """Read a checkpoint file safely (no pickled code) and return a linstab state dict.

    Args:
        path: the file.
        fmt: ``"akamaster"`` (dict with ``"state_dict"``), ``"pytorchcv"`` (a state dict, or a
            ``.zip`` holding one ``.pth``), ``"safetensors"``, or ``"state_dict"`` (a plain
            linstab/pytorchcv state dict saved with ``torch.save``).
        sha1: for a pytorchcv ``.zip``, the expected SHA-1 of the member.
    """
    path = Path(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith((".pth", ".pt", ".th"))]
            if len(members) != 1:
                raise ValueError(f"{path}: expected one .pth member in the zip, found {members}")
            data = zf.read(members[0])
        if sha1 is not None and hashlib.sha1(data).hexdigest() != sha1:
            raise ValueError(f"refusing {path}: SHA-1 of {members[0]} differs from {sha1}")
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if fmt == "akamaster":
        if not isinstance(obj, dict) or "state_dict" not in obj:
            raise ValueError(f"{path}: an akamaster checkpoint is a dict with 'state_dict'")
        return convert_akamaster_state_dict(obj["state_dict"])
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def build_from_spec(
    spec: CheckpointSpec, weights: str | os.PathLike | None = None
) -> tuple[nn.Module, Path]:
    """Build the registered architecture and load its verified weights.

    Returns:
        ``(model, path)``: the model in eval mode and the weights file it was loaded from.
    """
    path = resolve_weights(spec, weights)
    sd = load_state_dict_file(path, spec.fmt, sha1=spec.sha1 if spec.sha256 is None else None)
    model = CifarResNet(spec.depth, spec.shortcut)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {spec.name!r} (ResNet-{spec.depth}, shortcut {spec.shortcut}): "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    model.eval()
    return model, path
