"""The checkpoint registry: named models, where their weights come from, their checksums; the
default model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import models as _models
from .blocks import (
    CIFAR10_MEAN_AKAMASTER,
    CIFAR10_MEAN_PYTORCHCV,
    CIFAR10_STD_AKAMASTER,
    CIFAR10_STD_PYTORCHCV,
)
from .imagenet import known_models


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


def spec_from_sidecar(reg: dict, *, name: str | None = None, package_data: bool = False) -> CheckpointSpec:
    """The :class:`CheckpointSpec` of a model trained by ``linstab train`` from the ``"registry"``
    record of its JSON sidecar (``name`` overrides the record's).
    """
    return CheckpointSpec(
        name=name or reg["name"],
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
        package_data=package_data,
        notes="trained by linstab on the lossy JPEG CIFAR-10 set",
    )


def is_model_file(name) -> bool:
    """Whether a ``--model`` value names a model file (``.safetensors``) instead of a registry name."""
    return str(name).lower().endswith(".safetensors")


def trained_model_spec(path: str | os.PathLike) -> CheckpointSpec:
    """The spec of a model file written by ``linstab train``, from the JSON sidecar beside it.

    Its name is the one it was trained under, or ``"NAME (FILE)"`` when a registered model
    already has that name. The weights are checked against the sidecar's SHA-256 when loaded.

    Raises:
        ValueError: the file or its sidecar is missing, or the sidecar has no ``"registry"``
            record, or one whose name, depth, shortcut or SHA-256 is not of its type.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"model file {p} does not exist")
    side = p.with_suffix(".json")
    if not side.is_file():
        raise ValueError(
            f"model file {p}: its JSON sidecar {side.name} (written by linstab train next to the model) is "
            "missing; without it the architecture and the checksum are unknown"
        )
    try:
        reg = json.loads(side.read_text()).get("registry")
    except (json.JSONDecodeError, AttributeError):
        reg = None
    if not isinstance(reg, dict) or not {"name", "depth", "shortcut", "sha256"} <= set(reg):
        raise ValueError(
            f"{side}: not a linstab train sidecar (no 'registry' record with name, depth, shortcut, sha256)"
        )
    bad = [
        f"{key} {reg[key]!r}, expected {expected}"
        for key, ok, expected in (
            ("name", isinstance(reg["name"], str) and reg["name"].strip(), "a non-empty string"),
            (
                "depth",
                isinstance(reg["depth"], int)
                and not isinstance(reg["depth"], bool)
                and reg["depth"] >= 8
                and (reg["depth"] - 2) % 6 == 0,
                "an integer 6n+2 (8, 14, 20, ...)",
            ),
            ("shortcut", reg["shortcut"] in ("A", "B"), "'A' or 'B'"),
            ("sha256", isinstance(reg["sha256"], str) and len(reg["sha256"]) == 64, "64 hex digits"),
        )
        if not ok
    ]
    if bad:
        raise ValueError(f"{side}: damaged 'registry' record: " + "; ".join(bad))
    name = reg["name"] if reg["name"] not in REGISTRY else f"{reg['name']} ({p.name})"
    return spec_from_sidecar({**reg, "file_name": p.name}, name=name)


def _register_package_weights() -> None:
    """Register linstab's own trained models shipped as package data (JSON sidecars)."""
    try:
        root = resources.files("linstab") / "weights"
        entries = [p for p in root.iterdir() if p.name.endswith(".json")]
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        return
    for entry in sorted(entries, key=lambda p: p.name):
        reg = json.loads(entry.read_text()).get("registry")
        if reg:
            _register(spec_from_sidecar(reg, package_data=True))


_register_package_weights()


def list_models() -> list[str]:
    """Names of the registered checkpoints and of the ImageNet networks (``torchvision:...``)."""
    return sorted(_models.REGISTRY) + known_models()


PAPER_PAIR = ("resnet56-linstab", "resnet110-linstab")
"""The paper's two networks as linstab trains them (option B, issue 11)."""


def default_model_name() -> str:
    """The default model of every command: the paper's ResNet-56 (``resnet56-linstab``) when it is
    embedded, else the best embedded linstab model, else ``resnet56-akamaster``.
    """
    own = [s for s in REGISTRY.values() if s.source == "linstab" and s.package_data]
    if any(s.name == PAPER_PAIR[0] for s in own):
        return PAPER_PAIR[0]
    if own:
        own.sort(key=lambda s: (s.published_error if s.published_error is not None else 1e9, -s.depth))
        return own[0].name
    return "resnet56-akamaster"


SHORTCUT_REFERENCE = "resnet56-akamaster"
"""The option-A network the report shows beside option-B networks where the shortcut type
matters: the spectra of the down-sampling units (``linstab report --shortcut-reference``).
"""


def default_report_models() -> list[str]:
    """The models ``linstab report`` (``make run``) analyses by default: the paper's ResNet-56
    and ResNet-110 side by side once both ship embedded, else :func:`default_model_name`.
    """
    embedded = {s.name for s in REGISTRY.values() if s.source == "linstab" and s.package_data}
    if all(name in embedded for name in PAPER_PAIR):
        return list(PAPER_PAIR)
    return [default_model_name()]
