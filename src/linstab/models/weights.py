"""Weight resolution (explicit path, ``$LINSTAB_WEIGHTS_DIR``, package data, cache, download),
checksums and safe loading (``weights_only`` / safetensors; pickled code never runs).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import urllib.request
import zipfile
import zlib
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..io.cache import cache_root
from ..io.hashing import sha1_file, sha256_file
from .blocks import CifarResNet
from .registry import CheckpointSpec


def weights_cache_dir() -> Path:
    """The user cache directory for downloaded weights (``cache_root() / "weights"``)."""
    return cache_root() / "weights"


def _verify(spec: CheckpointSpec, path: Path) -> None:
    if spec.sha256 is not None:
        got = sha256_file(path)
        if got != spec.sha256:
            raise ValueError(
                f"refusing weights file {path} for {spec.name!r}: SHA-256 is {got}, expected {spec.sha256}"
            )
    elif spec.sha1 is not None:
        target = path
        if path.suffix == ".zip":
            return  # the member is checked after unpacking, in load_state_dict_file
        got = sha1_file(target)
        if got != spec.sha1:
            raise ValueError(
                f"refusing weights file {path} for {spec.name!r}: SHA-1 is {got}, expected {spec.sha1}"
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
        if not isinstance(weights, str | os.PathLike):
            raise TypeError(
                f"weights must be a file path (str or os.PathLike) or None; got {type(weights).__name__} "
                f"{weights!r}"
            )
        path = Path(weights).expanduser()
        if path.is_dir():
            raise ValueError(f"weights {path} for {spec.name!r} is a folder; expected the weights file")
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} for {spec.name!r} does not exist")
        _verify(spec, path)
        return path
    names = _candidate_names(spec)
    env = os.environ.get("LINSTAB_WEIGHTS_DIR")
    env_note = ""  # what the error says about LINSTAB_WEIGHTS_DIR
    if env:
        hit = _find_in_dir(Path(env).expanduser(), names)
        if hit is not None:
            _verify(spec, hit)
            return hit
        env_note = (
            f" LINSTAB_WEIGHTS_DIR={env} is not a folder."
            if not Path(env).expanduser().is_dir()
            else f" It is not in LINSTAB_WEIGHTS_DIR={env}."
        )
    if spec.package_data:
        ref = resources.files("linstab") / "weights" / spec.file_name
        if ref.is_file():
            path = Path(str(ref))
            _verify(spec, path)
            return path
    cdir = weights_cache_dir()
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
        f"weights file {spec.file_name!r} for model {spec.name!r} not found ({reason}).{env_note} "
        "Supply it in one of three ways: (1) pass weights=PATH (CLI: --weights PATH); "
        "(2) set LINSTAB_WEIGHTS_DIR to a directory containing it (searched recursively); "
        f"(3) put it in the cache directory {cdir}."
    )


def find_local_weights(spec: CheckpointSpec) -> Path | None:
    """The verified local weights file of ``spec`` (everywhere :func:`resolve_weights` looks,
    no download), or ``None`` when there is none.

    Raises:
        ValueError: when a file is found but its checksum differs.
    """
    try:
        return resolve_weights(spec, download=False)
    except FileNotFoundError:
        return None


def _download(url: str, target: Path, timeout: float = 20.0) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:  # noqa: S310
        while chunk := resp.read(1 << 20):
            f.write(chunk)
    os.replace(tmp, target)


#: What :func:`load_state_dict_file` reads (``"pytorchcv-zip"`` is ``"pytorchcv"``).
STATE_DICT_FORMATS = ("akamaster", "pytorchcv", "pytorchcv-zip", "safetensors", "state_dict")


def _akamaster_key_error(key) -> ValueError:
    return ValueError(
        f"unexpected akamaster key {key!r}: expected conv1.*, bn1.*, linear.*, "
        "layerS.U.{conv1,bn1,conv2,bn2}.* or layerS.U.shortcut.{0,1}.* (S, U integers)"
    )


def convert_akamaster_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map akamaster keys (``module.layer2.0.conv1.weight``) onto linstab/pytorchcv keys.

    Args:
        sd: the akamaster ``state_dict`` (with or without the ``module.`` prefix).

    Returns:
        A state dict for :class:`CifarResNet` with shortcut ``"A"``.

    Raises:
        ValueError: a key of another layout (the message names it and the expected forms).
    """
    out: dict[str, torch.Tensor] = {}
    for key, val in sd.items():
        if not isinstance(key, str):
            raise _akamaster_key_error(key)
        k = key[len("module.") :] if key.startswith("module.") else key
        parts = k.split(".")
        if len(parts) < 2 or not all(parts):
            raise _akamaster_key_error(key)
        if parts[0] == "conv1":
            nk = "features.init_block.conv." + ".".join(parts[1:])
        elif parts[0] == "bn1":
            nk = "features.init_block.bn." + ".".join(parts[1:])
        elif parts[0] == "linear":
            nk = "output." + ".".join(parts[1:])
        elif parts[0].startswith("layer"):
            if len(parts) < 4 or not (parts[0][5:].isdigit() and parts[1].isdigit()):
                raise _akamaster_key_error(key)
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
                if len(parts) < 5 or parts[3] not in ("0", "1"):
                    raise _akamaster_key_error(key)
                idx = int(parts[3])
                nk = prefix + ("identity_conv.conv." if idx == 0 else "identity_conv.bn.")
                nk += ".".join(parts[4:])
            else:
                raise _akamaster_key_error(key)
        else:
            raise _akamaster_key_error(key)
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

    Raises:
        ValueError: for an unknown ``fmt``, a file that cannot be read (truncated, corrupt, not a
            checkpoint, or pickled objects other than tensors), or a checkpoint that holds no state
            dict (names -> tensors).
        FileNotFoundError: for a missing file.
    """
    if fmt not in STATE_DICT_FORMATS:
        raise ValueError(f"fmt must be one of {STATE_DICT_FORMATS}; got {fmt!r}")
    path = Path(path)
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except SafetensorError as exc:  # a truncated or corrupt file (its checksum may still match)
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith((".pth", ".pt", ".th"))]
                if len(members) != 1:
                    raise ValueError(f"{path}: expected one .pth member in the zip, found {members}")
                data = zf.read(members[0])
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # the member's SHA-1: checked once read
            raise ValueError(f"{path} is not a readable zip file: {exc}") from None
        if sha1 is not None and hashlib.sha1(data).hexdigest() != sha1:
            raise ValueError(f"refusing {path}: SHA-1 of {members[0]} differs from {sha1}")
        obj = _torch_load(io.BytesIO(data), path)
    else:
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        obj = _torch_load(path, path)
    if fmt == "akamaster":
        if not isinstance(obj, dict) or "state_dict" not in obj:
            raise ValueError(f"{path}: an akamaster checkpoint is a dict with 'state_dict'")
        return convert_akamaster_state_dict(obj["state_dict"])
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: expected a state dict (names -> tensors); entries that are not: {bad[:5]}")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def _torch_load(source, path: Path):
    """``torch.load(source, weights_only=True)`` on the CPU; an unreadable file is a ValueError."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint of tensors (torch.load(weights_only=True): "
            f"{detail[:200]}); pickled code is never run"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint (truncated or damaged): "
            f"{str(exc)[:200] or type(exc).__name__}"
        ) from None


def build_from_spec(spec: CheckpointSpec, weights: str | os.PathLike | None = None) -> tuple[nn.Module, Path]:
    """Build the registered architecture and load its verified weights.

    Returns:
        ``(model, path)``: the model in eval mode and the weights file it was loaded from.
    """
    path = resolve_weights(spec, weights)
    sd = load_state_dict_file(path, spec.fmt, sha1=spec.sha1 if spec.sha256 is None else None)
    model = CifarResNet(spec.depth, spec.shortcut)
    expected = model.state_dict()
    misshaped = [
        f"{k}: file {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if misshaped:
        raise ValueError(
            f"{path} does not fit {spec.name!r} (ResNet-{spec.depth}, shortcut {spec.shortcut}): "
            f"tensors of another shape: {misshaped[:5]}"
        )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {spec.name!r} (ResNet-{spec.depth}, shortcut {spec.shortcut}): "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    model.eval()
    return model, path
