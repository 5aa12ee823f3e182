"""The training loop: resumable checkpoints, evaluation, and the safetensors + JSON outputs."""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import pickle
import platform
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.cifar10_jpeg import cifar10_jpeg_dir, jpeg_members
from ..data.images import default_images
from ..io.processes import PidLock, clean_stale_tmp, tmp_path
from ..io.validate import check_int, is_real
from ..models.blocks import CIFAR10_MEAN_PYTORCHCV, CIFAR10_STD_PYTORCHCV, CifarResNet
from ..models.device import resolve_device
from ..models.weights import load_state_dict_file, sha256_file
from .averaging import WeightAverage, recompute_bn_statistics
from .dataset import (
    DATASET_DESCRIPTION,
    DEFAULT_PAD,
    augment,
    load_split,
    normalize,
)
from .optim import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULT_WARMUP,
    DEFAULT_WEIGHT_DECAY,
    SCHEDULES,
    make_constant_scheduler,
    make_scheduler,
    param_groups,
)
from .precision import autocast, cpu_has_native_bf16, is_channels_last, resolve_precision
from .stop import StopOnSignal

CHECKPOINT_VERSION = 1
#: Default of ``train(checkpoint_seconds=)``: a mid-epoch save at most every 10 minutes.
DEFAULT_CHECKPOINT_SECONDS = 600.0

RESUME_END_STEP_KEYS = frozenset({"averaging"})
"""Recipe entries that describe only what happens after the last epoch (the batch-norm pass of
the weight average): a resumed run does that step with the current code, so a checkpoint whose
entry reads otherwise still resumes (its epochs are unaffected)."""

#: What a checkpoint must hold to be exported (:func:`export_checkpoint`) or resumed.
CHECKPOINT_KEYS = ("recipe", "model", "epoch")
RESUME_KEYS = (*CHECKPOINT_KEYS, "optimizer", "scheduler", "rng", "history")


def _short(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _recipe_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The recipe entries a resumed run would change, as ``{key: (checkpoint's, requested)}``.

    Entries of ``new`` only are compared (one the checkpoint has and ``new`` lacks is an option
    this run does not use, e.g. ``compile``), except :data:`RESUME_END_STEP_KEYS`. Differing
    dicts (the ``init`` record) are reported by their differing sub-entries (``init.sha256``),
    and every value is shortened, so that the message stays readable.
    """
    diff: dict[str, tuple[str, str]] = {}

    def walk(key: str, a: Any, b: Any) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in [*a, *(k for k in b if k not in a)]:
                walk(f"{key}.{k}", a.get(k), b.get(k))
        else:
            diff[key] = (_short(repr(a)), _short(repr(b)))

    for k, v in new.items():
        if k not in RESUME_END_STEP_KEYS and old.get(k) != v:
            walk(k, old.get(k), v)
    return diff


def read_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (``torch.load(weights_only=True)``, on the CPU).

    Args:
        path: the checkpoint file.
        required: the entries it must hold.

    Returns:
        the checkpoint's dict.

    Raises:
        ValueError: the file is missing, damaged, truncated, not a ``torch.save`` file of
            tensors, dicts, lists, numbers and strings, of another checkpoint version, or lacks
            one of ``required``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ValueError(f"checkpoint {path} {what}; expected a checkpoint file written by linstab train")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        if isinstance(exc, pickle.UnpicklingError):
            why = "its contents are not tensors, dicts, lists, numbers and strings"
        else:
            why = str(exc).split(". ")[0].strip() or type(exc).__name__
        raise ValueError(
            f"{path} is not a readable linstab training checkpoint (damaged, truncated or not written "
            f"by torch.save: {_short(why, 160)}); expected a *.ckpt.pt file written by linstab train"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: not a linstab training checkpoint: expected a dict of version {CHECKPOINT_VERSION}; "
            f"got a {type(state).__name__}"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        got = f"version {state['version']!r}" if "version" in state else "no version entry"
        raise ValueError(
            f"{path}: not a linstab training checkpoint of version {CHECKPOINT_VERSION}: expected a dict "
            f"with 'version': {CHECKPOINT_VERSION}; got {got}"
        )
    missing = [k for k in required if k not in state]
    if missing or not isinstance(state["recipe"], dict):
        raise ValueError(
            f"{path}: a linstab training checkpoint holds {list(required)}; this one lacks "
            f"{missing or ['a recipe dict']}"
        )
    return state


@torch.no_grad()
def _eval_pass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
) -> tuple[float, float]:
    if images.ndim != 4 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected images (N, 3, H, W) and labels (N,), got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set of images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    channels_last = is_channels_last(model)
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        for i in range(0, images.shape[0], batch_size):
            x = normalize(images[i : i + batch_size].to(device), mean, std)
            y = labels[i : i + batch_size].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)  # float32 on every device, whatever precision trained it
            logits = logits.float()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    finally:
        model.train(was_training)
    n = images.shape[0]
    return correct / n, loss_sum / n


def evaluate(
    model: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 1000,
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of a model taking normalized inputs.

    Args:
        model: a network taking ``(x - mean) / std`` (e.g. :class:`linstab.models.CifarResNet`);
            it is run in eval mode and its training flag restored afterwards.
        images_uint8: ``(N, 3, H, W)`` uint8 images (0..255); float images in [0, 1] work too.
        labels: ``(N,)`` integer labels.
        mean: per-channel normalization mean.
        std: per-channel normalization std.
        batch_size: images per forward pass.
    """
    return _eval_pass(model, images_uint8, labels, mean, std, batch_size)[0]


def evaluate_loss(
    model: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 1000,
) -> float:
    """Mean cross-entropy of a model in eval mode; arguments as in :func:`evaluate`."""
    return _eval_pass(model, images_uint8, labels, mean, std, batch_size)[1]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = tmp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` through a temporary file and a rename."""
    tmp = tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` entries in sorted order, in place.

    ``safetensors`` writes the metadata in a hash map's order, which changes from process to
    process: the same weights would give files of different SHA-256. The header keeps its length
    (same entries, compact JSON, padded with spaces as safetensors pads it), so the data that
    follows it stays where it is.
    """
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        meta = header.get("__metadata__")
        if not isinstance(meta, dict):
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        if len(text) > size:  # cannot happen for the same entries; keep the file as written
            return
        f.seek(8)
        f.write(text + b" " * (size - len(text)))


def _save_safetensors(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Save every state-dict entry (floats as float32), contiguous, on the CPU, atomically."""
    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float()
        tensors[k] = v.contiguous().clone()
    tmp = tmp_path(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_safetensors_metadata(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_model_file(
    model: nn.Module, out: Path, name: str, depth: int, shortcut: str, test_error, mean, std
) -> dict[str, Any]:
    """Save a trained CIFAR ResNet as ``out`` (safetensors) and return the sidecar's
    ``"registry"`` record that makes it loadable by name or path (``test_error``: percent on the
    JPEG test set, ``None`` when not evaluated).
    """
    _save_safetensors(
        model, out, {"format": "pt", "linstab": "CifarResNet", "depth": str(depth), "shortcut": shortcut}
    )
    return {
        "name": name,
        "depth": depth,
        "shortcut": shortcut,
        "file_name": out.name,
        "sha256": sha256_file(out),
        "test_error_jpeg": test_error,
        "mean": list(mean),
        "std": list(std),
    }


def default_checkpoint_path(out: str | os.PathLike) -> Path:
    """``<out without suffix>.ckpt.pt``, e.g. ``runs/r20.safetensors`` -> ``runs/r20.ckpt.pt``."""
    out = Path(out)
    return out.with_name(out.stem + ".ckpt.pt")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def check_model_name(name: Any) -> None:
    """Check a ``name=`` for a model's sidecar: ``None`` (the file's stem) or a non-blank string.

    Raises:
        TypeError: ``name`` is neither ``None`` nor a string.
        ValueError: ``name`` is blank (a sidecar with it could not be loaded again).
    """
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"name must be a string or None; got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ValueError(
            f"name must be a non-blank string (the model's name in its sidecar), or None for the file's "
            f"stem; got {name!r}"
        )


def _check_real(name: str, value: Any) -> float:
    """``value`` as a ``float`` after checking that it is a real number (not a bool or a string)."""
    if not is_real(value):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    return float(value)


def _check_args(
    depth: int,
    shortcut: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: float,
    label_smoothing: float,
    limit: int | None,
    out: str | os.PathLike,
    seed: int,
    stop_after: int | None,
) -> dict[str, Any]:
    """Check :func:`train`'s arguments; returns them as plain ``int``/``float`` (NumPy scalars
    converted), so that they reach the scheduler, the recipe and the JSON sidecar as such.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, ...); got {depth!r}")
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B'; got {shortcut!r}")
    args = {
        "depth": int(depth),
        "epochs": check_int("epochs", epochs),
        "batch_size": check_int("batch_size", batch_size),
        "seed": check_int("seed", seed, minimum=-(2**63)),
        "stop_after": check_int("stop_after", stop_after, optional=True),
        "limit": check_int("limit (a number of training images)", limit, optional=True),
    }
    lr = _check_real("lr", lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    weight_decay = _check_real("weight_decay", weight_decay)
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    warmup = _check_real("warmup", warmup)
    if not 0 < warmup < 1:
        raise ValueError(f"warmup must be a fraction in (0, 1); got {warmup!r}")
    label_smoothing = _check_real("label_smoothing", label_smoothing)
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must lie in [0, 1); got {label_smoothing!r}")
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be a path (str or os.PathLike); got {type(out).__name__} {out!r}")
    if Path(out).suffix != ".safetensors":
        raise ValueError(f"out must be a .safetensors file name; got {str(out)!r}")
    args.update(lr=lr, weight_decay=weight_decay, warmup=warmup, label_smoothing=label_smoothing)
    return args


def _load_init(
    init: str | os.PathLike, depth: int, shortcut: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and a provenance record of a warm-start file (see ``train(init=...)``)."""
    path = Path(init).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        raise ValueError(f"init must be an existing .safetensors file; got {str(init)!r}")
    state = load_state_dict_file(path, "safetensors")
    expected = CifarResNet(depth, shortcut).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"init {path} does not hold CifarResNet(depth={depth}, shortcut={shortcut!r}) weights: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}"
        )
    record: dict[str, Any] = {"file": path.name, "sha256": sha256_file(path), "total_epochs": 0}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError(f"it holds a JSON {type(meta).__name__}")
            record["total_epochs"] = int(meta.get("total_epochs", meta.get("epochs", 0)))
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(
                f"init {path}: its sidecar {sidecar.name} is damaged ({_short(str(exc), 120)}); expected the "
                "JSON object linstab train writes (with the run's epochs), or no sidecar beside the model"
            ) from exc
        record["recipe"] = meta.get("recipe")
        record["history"] = meta.get("history")
        record["test_accuracy_jpeg"] = meta.get("test_accuracy_jpeg")
        record["training_wall_time_s"] = meta.get("training_wall_time_s")
    return state, record


def _cpu_time(history: list[dict]) -> dict[str, Any]:
    """The sidecar's CPU time: the process's CPU seconds (all threads) summed over the epochs
    that recorded them (runs of older linstab versions did not), unaffected by pauses.
    """
    timed_epochs = [r["cpu_seconds"] for r in history if r.get("cpu_seconds") is not None]
    return {
        "training_cpu_time_s": round(float(sum(timed_epochs)), 1) if timed_epochs else None,
        "training_cpu_time_epochs": len(timed_epochs),
    }


def train(
    depth: int,
    shortcut: str,
    data_dir: str | os.PathLike | None,
    epochs: int,
    out: str | os.PathLike,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    limit: int | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    warmup: float = DEFAULT_WARMUP,
    label_smoothing: float = 0.0,
    checkpoint: str | os.PathLike | None = None,
    name: str | None = None,
    stop_after: int | None = None,
    channels_last: bool = True,
    init: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "auto",
    compile: bool = False,
    schedule: str = "one-cycle",
    checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
) -> dict[str, Any]:
    """Train a CIFAR ResNet on the JPEG CIFAR-10 set and save it as ``.safetensors`` + JSON.

    Args:
        depth: network depth ``6n + 2`` (20, 32, 56, ...).
        shortcut: ``"A"`` or ``"B"`` down-sampling shortcuts.
        data_dir: folder with ``train.zip``/``test.zip`` (``None``: ``$LINSTAB_CIFAR10_JPEG``).
        epochs: number of training epochs (the schedule spans all of them).
        out: the ``.safetensors`` file written at the end; the JSON sidecar is
            ``out.with_suffix(".json")``.
        batch_size: training batch size.
        lr: peak learning rate of the one-cycle schedule; the constant learning rate of
            ``schedule="swa"``.
        seed: seed of the initialization, the shuffling and the augmentation.
        limit: train on this many training images and evaluate on ``min(limit, 10000)`` test
            images (quick runs); ``None`` for the full set.
        resume: continue from the checkpoint if it exists (its recipe must match); without
            it, an existing checkpoint is refused rather than overwritten.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        progress: show a tqdm bar per epoch and print one summary line per epoch.
        weight_decay: L2 weight decay of conv/linear weights (BN and biases get none).
        warmup: fraction of the steps spent warming up (one-cycle only).
        label_smoothing: cross-entropy label smoothing (0: none).
        checkpoint: the resumable checkpoint (default ``<out stem>.ckpt.pt`` next to ``out``).
        name: registry name in the sidecar (default: the stem of ``out``).
        stop_after: stop after this many epochs *in this call* (the checkpoint stays; continue
            with ``resume=True``); ``None`` runs to the end.
        channels_last: run the model in the ``channels_last`` memory format.
        init: start from these weights (a ``.safetensors`` file written by :func:`train`, same
            depth and shortcut) instead of a random initialization: a warm restart with a new
            one-cycle schedule. Its SHA-256, and its JSON sidecar's epochs and history when the
            sidecar is beside it, go into the recipe and the sidecar.
        log: where per-epoch lines go (default: ``print`` when ``progress``, else nowhere).
        precision: ``"auto"`` (bf16 autocast on CUDA and on CPUs with native bf16, float32
            elsewhere), ``"bf16"`` or ``"float32"``. The weights, the optimizer and the
            evaluation stay float32; only the forward/backward of a training step runs in bf16.
        compile: run the training forward through ``torch.compile`` (same weights and
            checkpoints; the first steps compile).
        schedule: ``"one-cycle"``, or ``"swa"``: stochastic weight averaging (Izmailov et al.,
            2018) from the trained model given as ``init``: SGD at the constant learning rate
            ``lr``, the weights averaged with equal weights at the end of every epoch; at the
            end the average gets batch-norm statistics recomputed over the training images
            (shuffled and augmented as in training batches) and is the model written, evaluated
            and recorded (the per-epoch history evaluates the SGD iterate). The average is part
            of the checkpoint, so a resumed run continues it.
        checkpoint_seconds: also save the checkpoint within an epoch, after the first training
            step that ends this many seconds after the last save (``0``: after every step;
            ``None``: at epoch ends only). A run killed mid-epoch then loses at most this much
            work: ``resume=True`` continues at the saved step with the epoch's image order,
            random state and running sums, bit for bit as if it had not stopped. A SIGTERM
            (``kill PID``) or Ctrl-C loses nothing: the run finishes its training step, saves
            there and returns (``stopped_by`` names the signal); a second signal acts as usual.
            A signal while the data load returns before the first step (nothing to save); one in
            the last epoch's evaluation returns before the final pass and files (resume does them).

    Returns:
        A summary dict: ``completed``, ``epoch`` (epochs done), ``history`` (one dict per
        epoch: losses, accuracies, ``lr`` the learning rate of the epoch's last step, seconds),
        ``stopped_by`` (the signal that stopped the run, else ``None``) and
        ``exit_status`` (128 + that signal's number, else 0), and when completed the final
        accuracies, output paths and the sidecar.

    Raises:
        ValueError: for invalid arguments (also a ``limit`` above the training images, checked
            before decoding), a missing data folder or zip, an ``init`` that does not fit or
            whose sidecar is damaged, or a checkpoint whose recipe differs from the requested one
            or whose saved state is damaged.
        TypeError: for an argument of the wrong type (e.g. a float ``epochs``, a non-string ``name``).
    """
    checked = _check_args(
        depth,
        shortcut,
        epochs,
        batch_size,
        lr,
        weight_decay,
        warmup,
        label_smoothing,
        limit,
        out,
        seed,
        stop_after,
    )
    depth, epochs, batch_size, seed, stop_after, limit = (
        checked[k] for k in ("depth", "epochs", "batch_size", "seed", "stop_after", "limit")
    )
    lr, weight_decay, warmup, label_smoothing = (
        checked[k] for k in ("lr", "weight_decay", "warmup", "label_smoothing")
    )
    check_model_name(name)
    if checkpoint_seconds is not None and not (
        isinstance(checkpoint_seconds, int | float)
        and not isinstance(checkpoint_seconds, bool)
        and math.isfinite(checkpoint_seconds)
        and checkpoint_seconds >= 0
    ):
        raise ValueError(
            f"checkpoint_seconds must be None or a finite number >= 0; got {checkpoint_seconds!r}"
        )
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if schedule == "swa" and init is None:
        raise ValueError(
            "schedule='swa' averages the weights around a trained model: give that model as init "
            "(--init FILE.safetensors)"
        )
    dev = resolve_device(device, auto=True)
    prec = resolve_precision(precision, dev)
    out = Path(out).expanduser()
    ckpt_path = Path(checkpoint).expanduser() if checkpoint is not None else default_checkpoint_path(out)
    json_path = out.with_suffix(".json")
    if ckpt_path.absolute() in (out.absolute(), json_path.absolute()):
        raise ValueError(
            "the checkpoint must be another file than out and its sidecar; got checkpoint "
            f"{str(ckpt_path)!r} and out {str(out)!r}"
        )
    name = name or out.stem
    if not resume and ckpt_path.is_file():  # starting over would overwrite it after one epoch
        raise ValueError(
            f"a checkpoint of an earlier run exists at {ckpt_path}: pass --resume (resume=True) to "
            "continue it, or delete it (or give another --checkpoint) to start from scratch"
        )
    finished = [p for p in (out, json_path) if p.exists()]
    if finished and not (resume and ckpt_path.is_file()):  # only this run's own checkpoint rewrites it
        raise ValueError(
            f"{finished[0]} exists (a finished model, or its sidecar): training would replace it; give "
            "another --out (out=), or delete the file to train anew"
        )
    if init is not None and Path(init).expanduser().absolute() == out.absolute():
        raise ValueError(f"init and out are the same file ({str(out)!r}): the run would overwrite its start")
    emit = log if log is not None else (print if progress else (lambda _msg: None))
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"data folder {str(data_dir)!r} does not exist or is not a directory")
    try:
        root = cifar10_jpeg_dir(data_dir)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    for split in ("train", "test"):
        if not (root / f"{split}.zip").is_file():
            raise ValueError(f"data folder {root} lacks {split}.zip")
    if limit is not None:  # counted in the zip's directory: a limit above it is refused before decoding
        try:
            n_available = len(jpeg_members(root / "train.zip"))
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{root / 'train.zip'} is not a readable zip file: {exc}") from exc
        if limit > n_available:
            raise ValueError(
                f"limit {limit} exceeds the {n_available} training images of {root}: give at most "
                f"{n_available}, or no limit for all of them"
            )

    init_state, init_record = (None, None) if init is None else _load_init(init, depth, shortcut)
    mean, std = CIFAR10_MEAN_PYTORCHCV, CIFAR10_STD_PYTORCHCV
    recipe: dict[str, Any] = {
        "architecture": f"CifarResNet(depth={depth}, shortcut={shortcut!r})",
        "depth": depth,
        "shortcut": shortcut,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": "SGD",
        "momentum": DEFAULT_MOMENTUM,
        "nesterov": True,
        "weight_decay": weight_decay,
        "weight_decay_on": "conv and linear weights (not batch norm, not biases)",
        "schedule": "OneCycleLR (per batch), cosine warm-up and annealing",
        "max_lr": float(lr),
        "initial_lr": float(lr) / 10.0,
        "final_lr": float(lr) / 1e4,
        "warmup_fraction": warmup,
        "label_smoothing": label_smoothing,
        "loss": "cross-entropy",
        "augmentation": f"random crop {DEFAULT_PAD}-pixel zero padding, random horizontal flip",
        "normalization_mean": list(mean),
        "normalization_std": list(std),
        "seed": seed,
        "limit": limit,
        "precision": "bf16 autocast" if prec == "bf16" else "float32",
        "channels_last": bool(channels_last),
    }
    if schedule == "swa":
        for key in ("max_lr", "initial_lr", "final_lr", "warmup_fraction"):
            del recipe[key]
        recipe["schedule"] = "constant lr, stochastic weight averaging (SWA)"
        recipe["lr"] = float(lr)
        recipe["averaging"] = (
            "equal-weight mean of the weights at the end of every epoch; batch-norm statistics "
            "recomputed for the mean over the training images, shuffled and augmented as in training"
        )
    if compile:
        recipe["compile"] = True
    if init_record is not None:
        recipe["init"] = init_record

    for folder in {out.parent, ckpt_path.parent}:  # before any work: a long run must be able to save
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"cannot create the folder {folder} for out {str(out)!r} and checkpoint "
                f"{str(ckpt_path)!r}: {exc.strerror or exc}"
            ) from exc

    # the lock keeps a second run off the checkpoint while this one runs (it would overwrite it)
    with PidLock(ckpt_path, "checkpoint"):
        stop = StopOnSignal()  # SIGTERM / Ctrl-C: save where the run is, then return
        stopped_at: str | None = None  # where a stop signal ended the run
        with stop:  # from here a signal is a stop request, answered at the next safe point
            for target in (ckpt_path, out, json_path):  # temporary files of a run killed while saving
                clean_stale_tmp(target)
            state = None  # the checkpoint to resume: read and compared with the recipe before any work
            if resume and ckpt_path.is_file():
                state = read_checkpoint(ckpt_path, RESUME_KEYS)
                diff = _recipe_diff(state["recipe"], recipe)
                if diff:
                    raise ValueError(
                        f"cannot resume from {ckpt_path}: its recipe differs from the requested one: "
                        + "; ".join(f"{k}: checkpoint {a}, requested {b}" for k, (a, b) in diff.items())
                    )
                if schedule == "swa" and "average" not in state:
                    raise ValueError(f"cannot resume from {ckpt_path}: it holds no weight average (swa)")
            t_load = time.perf_counter()
            x_train, y_train = load_split("train", root, limit)
            x_test, y_test = load_split("test", root, None if limit is None else min(int(limit), 10000))
            emit(
                f"data: {x_train.shape[0]} train / {x_test.shape[0]} test JPEG images "
                f"({time.perf_counter() - t_load:.1f} s)"
            )
            if dev.type == "cuda":
                x_train, y_train = x_train.to(dev), y_train.to(dev)
                x_test, y_test = x_test.to(dev), y_test.to(dev)
            n_train = x_train.shape[0]
            steps_per_epoch = math.ceil(n_train / batch_size)

            torch.manual_seed(seed)
            model = CifarResNet(depth, shortcut)
            if init_state is not None:
                model.load_state_dict(init_state)
            model = model.to(dev)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = torch.optim.SGD(
                param_groups(model, weight_decay), lr=lr, momentum=DEFAULT_MOMENTUM, nesterov=True
            )
            if schedule == "swa":
                scheduler = make_constant_scheduler(optimizer)
                average: WeightAverage | None = WeightAverage(model)
            else:
                scheduler = make_scheduler(optimizer, lr, epochs * steps_per_epoch, warmup)
                average = None
            step_model = torch.compile(model) if compile else model
            gen = torch.Generator().manual_seed(seed)
            criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

            start_epoch, history, train_seconds = 0, [], 0.0
            partial: dict[str, Any] | None = None  # a mid-epoch checkpoint's place in its epoch
            if state is not None:
                try:  # a checkpoint of the right recipe whose saved state is damaged: no traceback
                    model.load_state_dict(state["model"])
                    optimizer.load_state_dict(state["optimizer"])
                    scheduler.load_state_dict(state["scheduler"])
                    if average is not None:
                        average.load_state_dict(state["average"])
                    gen.set_state(state["rng"]["generator"])
                    torch.set_rng_state(state["rng"]["torch"])
                    if dev.type == "cuda" and state["rng"].get("cuda"):
                        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
                    start_epoch = int(state["epoch"])
                    history = list(state["history"])
                    train_seconds = float(state.get("train_seconds", 0.0))
                    partial = state.get("in_epoch")
                    if partial is not None:
                        steps, n_perm = int(partial["steps"]), partial["perm"].shape[0]
                except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
                    raise ValueError(
                        f"cannot resume from {ckpt_path}: its saved state does not fit this run "
                        f"({type(exc).__name__}: {_short(str(exc), 200)}); the checkpoint is damaged or "
                        "not written by linstab train"
                    ) from exc
                where = f"after epoch {start_epoch}/{epochs}"
                if partial is not None:
                    if steps != steps_per_epoch or n_perm != n_train:
                        raise ValueError(
                            f"cannot resume from {ckpt_path}: its epoch has {steps} steps over "
                            f"{n_perm} images, this run {steps_per_epoch} over {n_train}"
                        )
                    where += f", step {int(partial['step'])}/{steps_per_epoch} of epoch {start_epoch + 1}"
                emit(f"resumed from {ckpt_path} {where}")
            elif resume:
                start = f"from the init weights {Path(init).name}" if init is not None else "from scratch"
                emit(f"no checkpoint at {ckpt_path}; starting {start}")

            bar_cls = None
            if progress:
                from tqdm.auto import tqdm as bar_cls

            def save(epochs_done: int, in_epoch: dict[str, Any] | None = None) -> None:
                rng = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
                if dev.type == "cuda":
                    rng["cuda"] = torch.cuda.get_rng_state_all()
                ckpt_state = {
                    "version": CHECKPOINT_VERSION,
                    "recipe": recipe,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epochs_done,
                    "rng": rng,
                    "history": history,
                    "train_seconds": train_seconds,
                }
                if average is not None:
                    ckpt_state["average"] = average.state_dict()
                if in_epoch is not None:
                    ckpt_state["in_epoch"] = in_epoch
                _atomic_torch_save(ckpt_state, ckpt_path)

            epochs_run = 0
            last_save = time.perf_counter()
            for epoch in range(start_epoch, epochs):
                if stop_after is not None and epochs_run >= stop_after:
                    break
                if stop.requested:
                    stopped_at = f"after epoch {epoch}/{epochs}" if epochs_run else None  # None: see below
                    break
                t0, c0 = time.perf_counter(), time.process_time()
                model.train()
                if partial is not None:  # continue the interrupted epoch where its checkpoint left it
                    perm = partial["perm"].to(dev)
                    loss_sum = partial["loss_sum"].to(dev)
                    correct = partial["correct"].to(dev)
                    seen, first_step = int(partial["seen"]), int(partial["step"])
                    batch_losses = list(partial["batch_losses"])
                    secs_before = float(partial["seconds"])
                    cpu_before = float(partial.get("cpu_seconds", 0.0))
                    partial = None
                else:
                    perm = torch.randperm(n_train, generator=gen).to(dev)
                    loss_sum = torch.zeros((), device=dev)
                    correct = torch.zeros((), device=dev, dtype=torch.long)
                    seen, first_step, secs_before, cpu_before = 0, 0, 0.0, 0.0
                    batch_losses: list[float] = []
                bar = (
                    bar_cls(
                        total=steps_per_epoch,
                        initial=first_step,
                        desc=f"epoch {epoch + 1}/{epochs}",
                        leave=False,
                        dynamic_ncols=True,
                        mininterval=1.0 if sys.stderr.isatty() else 10.0,
                    )
                    if bar_cls is not None
                    else None
                )
                lr_step = optimizer.param_groups[0]["lr"]  # the learning rate of the epoch's last step
                for step in range(first_step, steps_per_epoch):
                    idx = perm[step * batch_size : (step + 1) * batch_size]
                    xb = augment(x_train[idx], gen)
                    yb = y_train[idx]
                    xb = normalize(xb, mean, std)
                    if channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    with autocast(dev, prec):
                        logits = step_model(xb)
                        loss = criterion(logits.float(), yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    lr_step = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    scheduler.step()
                    bs = yb.shape[0]
                    with torch.no_grad():
                        loss_sum += loss.detach() * bs
                        correct += (logits.argmax(1) == yb).sum()
                    seen += bs
                    batch_losses.append(float(loss.detach()) if dev.type == "cpu" else 0.0)
                    if bar is not None:
                        bar.update(1)
                        if step % 20 == 0 or step == steps_per_epoch - 1:
                            bar.set_postfix(
                                loss=f"{float(loss_sum) / seen:.3f}",
                                acc=f"{100.0 * int(correct) / seen:.1f}%",
                                refresh=False,
                            )
                    due = (
                        checkpoint_seconds is not None
                        and time.perf_counter() - last_save >= checkpoint_seconds
                    )
                    if step < steps_per_epoch - 1 and (
                        stop.requested or due
                    ):  # the last step: with the epoch
                        save(
                            epoch,
                            {
                                "step": step + 1,
                                "steps": steps_per_epoch,
                                "perm": perm.cpu(),
                                "loss_sum": loss_sum.detach().cpu(),
                                "correct": correct.cpu(),
                                "seen": seen,
                                "batch_losses": batch_losses,
                                "seconds": secs_before + time.perf_counter() - t0,
                                "cpu_seconds": cpu_before + time.process_time() - c0,
                            },
                        )
                        last_save = time.perf_counter()
                        if stop.requested:
                            stopped_at = f"at step {step + 1}/{steps_per_epoch} of epoch {epoch + 1}/{epochs}"
                            break
                if bar is not None:
                    bar.close()
                if stopped_at is not None:
                    break
                train_loss = float(loss_sum) / seen
                train_acc = int(correct) / seen
                test_acc, test_loss = _eval_pass(model, x_test, y_test, mean, std, 1000)
                secs = secs_before + time.perf_counter() - t0
                train_seconds += secs
                q = max(1, steps_per_epoch // 4)
                record = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "lr": lr_step,
                    "seconds": secs,
                    # CPU seconds of this process over all its threads (wall "seconds" also count any
                    # time it was paused or starved); threads: torch threads at the epoch's end
                    "cpu_seconds": round(cpu_before + time.process_time() - c0, 1),
                    "threads": torch.get_num_threads(),
                }
                if dev.type == "cpu":
                    record["loss_first_quarter"] = float(np.mean(batch_losses[:q]))
                    record["loss_last_quarter"] = float(np.mean(batch_losses[-q:]))
                if average is not None:
                    average.update(model)
                    record["averaged"] = average.count
                history.append(record)
                emit(
                    f"epoch {epoch + 1:3d}/{epochs}  train loss {train_loss:.4f}  "
                    f"train acc {100 * train_acc:6.2f}%  test acc {100 * test_acc:6.2f}%  "
                    f"lr {record['lr']:.5f}  {secs:6.1f} s (CPU {record['cpu_seconds']:.1f} s, "
                    f"{record['threads']} threads)"
                )
                save(epoch + 1)
                last_save = time.perf_counter()
                epochs_run += 1
        done = len(history)
        saved = True  # whether this call saved the checkpoint where the signal stopped it
        if stopped_at is None and stop.requested:
            if epochs_run == 0:  # the signal came while the data loaded: no step was taken
                stopped_at, saved = "before its first training step", False
            elif done < epochs:  # in the evaluation of the epoch that --stop-after ends with
                stopped_at = f"after epoch {done}/{epochs}"
            else:  # in the last epoch's last step or evaluation: the final pass and files are left
                stopped_at = f"after epoch {done}/{epochs}, before the final evaluation and output files"
        summary: dict[str, Any] = {
            "completed": done >= epochs and stopped_at is None,
            "epoch": done,
            "history": history,
            "checkpoint": str(ckpt_path),
            "recipe": recipe,
            "stopped_by": stop.signal_name if stopped_at is not None else None,
            "exit_status": stop.exit_status if stopped_at is not None else 0,
        }
        if stopped_at is not None:
            state_note = (
                "checkpoint saved"
                if saved
                else "nothing to save, the checkpoint is as it was"
                if ckpt_path.is_file()
                else "nothing to save yet"
            )
            emit(
                f"{stop.signal_name}: stopped {stopped_at}, {state_note}; continue with resume "
                f"(checkpoint {ckpt_path})"
            )
            return summary
        if done < epochs:
            emit(f"stopped after epoch {done}/{epochs}; continue with resume (checkpoint {ckpt_path})")
            return summary

        swa_record = None
        if average is not None:
            t_bn = time.perf_counter()
            average.copy_to(model)
            bn_gen = torch.Generator().manual_seed(seed)  # shuffled and augmented as in training
            n_bn = recompute_bn_statistics(
                model,
                x_train,
                mean,
                std,
                batch_size,
                transform=lambda b: augment(b, bn_gen),
                generator=bn_gen,
            )
            swa_record = {
                "epochs_averaged": average.count,
                "batch_norm_layers_recomputed": n_bn,
                "batch_norm_inputs": (
                    f"the {n_train} training images once, shuffled and augmented as in training "
                    f"({recipe['augmentation']}; generator seed {seed})"
                ),
                "batch_norm_seconds": round(time.perf_counter() - t_bn, 1),
                "last_iterate_test_accuracy_jpeg": history[-1]["test_acc"],
            }
            emit(
                f"weight average of {average.count} epochs, batch-norm statistics recomputed over "
                f"{n_train} shuffled, augmented training images ({swa_record['batch_norm_seconds']} s)"
            )
        model.eval()
        test_acc = evaluate(model, x_test, y_test, mean, std)
        imgs, labels = default_images()
        default_acc = evaluate(model, imgs, labels, mean, std)
        default_correct = round(default_acc * labels.shape[0])
        model_cpu = model.to("cpu", memory_format=torch.contiguous_format)
        test_error = round(100.0 * (1.0 - test_acc), 2)
        registry = _write_model_file(model_cpu, out, name, depth, shortcut, test_error, mean, std)
        sidecar = {
            "model": recipe["architecture"],
            "recipe": recipe,
            "epochs": epochs,
            "total_epochs": epochs + (init_record or {}).get("total_epochs", 0),
            "seed": seed,
            "dataset": DATASET_DESCRIPTION,
            "train_images": int(n_train),
            "test_images": int(x_test.shape[0]),
            "training_wall_time_s": round(train_seconds, 1),
            **_cpu_time(history),
            "device": _device_name(dev),
            "precision": recipe["precision"],
            "cpu_native_bf16": cpu_has_native_bf16() if dev.type == "cpu" else None,
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "threads": torch.get_num_threads(),
            },
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "test_accuracy_jpeg": test_acc,
            "test_error_jpeg": test_error,
            "default_images_accuracy": default_acc,
            "default_images_correct": f"{default_correct}/{labels.shape[0]}",
            "history": history,
            "registry": registry,
        }
        if swa_record is not None:
            sidecar["swa"] = swa_record
        atomic_write_text(json_path, json.dumps(sidecar, indent=2) + "\n")
        emit(
            f"done: JPEG test accuracy {100 * test_acc:.2f}% on {x_test.shape[0]} images, "
            f"default images {default_correct}/{labels.shape[0]}; wrote {out} and {json_path}"
        )
        summary.update(
            test_accuracy_jpeg=test_acc,
            default_images_accuracy=default_acc,
            out=str(out),
            sidecar_path=str(json_path),
            sidecar=sidecar,
        )
        return summary


def _check_snapshot_target(out: Path) -> None:
    """Refuse to overwrite a model file that is not an earlier snapshot (e.g. a finished run's)."""
    side = out.with_suffix(".json")
    if not (out.exists() or side.exists()):
        return
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not (isinstance(meta, dict) and meta.get("completed") is False and "checkpoint" in meta):
        raise ValueError(
            f"{out} or its sidecar {side.name} exists and is not an earlier snapshot (its sidecar "
            'lacks "completed": false), e.g. a finished run\'s model: give another --out or delete it'
        )


def export_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, name: str | None = None
) -> dict[str, Any]:
    """Write the model of a training checkpoint as a model file (``.safetensors`` + JSON
    sidecar), so that a run still in progress can be analysed (``--model out.safetensors``).

    The sidecar says it is unfinished (``"completed": false``, the epoch reached of the
    recipe's epochs, the history so far) and has no test accuracy: the checkpoint's model is
    not evaluated here. The checkpoint is only read.

    Args:
        checkpoint: a checkpoint written by :func:`train` (``*.ckpt.pt``).
        out: the ``.safetensors`` file to write (its folder is created); an earlier snapshot
            there is replaced, any other file refused.
        name: the model's name in the sidecar (default: the stem of ``out``).

    Returns:
        the sidecar (a dict).

    Raises:
        ValueError: a missing or unreadable checkpoint, another checkpoint version, an ``out``
            that does not end in ``.safetensors``, or an ``out`` (or sidecar) that exists and is not
            an earlier snapshot (a finished model is never overwritten; a snapshot is replaced).
    """
    check_model_name(name)
    ckpt, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise ValueError(f"out must be a .safetensors file, got {str(out)!r}")
    if out.absolute() == ckpt.absolute():
        raise ValueError(f"out must be another file than the checkpoint; got {str(out)!r} for both")
    _check_snapshot_target(out)
    state = read_checkpoint(ckpt)
    recipe = state["recipe"]
    try:
        depth, shortcut = int(recipe["depth"]), recipe["shortcut"]
        model = CifarResNet(depth, shortcut)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{ckpt}: its model does not match its recipe's architecture "
            f"{recipe.get('architecture', '(none recorded)')}: {_short(str(exc), 200)}"
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    mean = recipe.get("normalization_mean", CIFAR10_MEAN_PYTORCHCV)
    std = recipe.get("normalization_std", CIFAR10_STD_PYTORCHCV)
    registry = _write_model_file(model, out, name or out.stem, depth, shortcut, None, mean, std)
    epoch, epochs = int(state["epoch"]), int(recipe["epochs"])
    in_epoch = state.get("in_epoch")
    where = f"after epoch {epoch}/{epochs}"
    if in_epoch is not None:
        where += f" and step {int(in_epoch['step'])}/{int(in_epoch['steps'])} of epoch {epoch + 1}"
    elif epoch >= epochs:  # every epoch ran; the run's own final pass and files were not made yet
        where += " (all epochs done, before the run's final evaluation and files)"
    sidecar = {
        "model": recipe["architecture"],
        "completed": False,
        "epoch": epoch,
        "epochs": epochs,
        "step_in_epoch": None if in_epoch is None else int(in_epoch["step"]),
        "note": f"snapshot of a training run {where}, not evaluated"
        + (
            " (the SGD iterate; the weight average is written, with recomputed batch-norm "
            "statistics, when the run completes)"
            if "average" in state
            else ""
        ),
        "checkpoint": str(ckpt),
        "recipe": recipe,
        "history": state.get("history", []),
        "training_wall_time_s": round(float(state.get("train_seconds", 0.0)), 1),
        **_cpu_time(state.get("history", [])),
        "dataset": DATASET_DESCRIPTION,
        "torch_version": torch.__version__,
        "registry": registry,
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return sidecar
