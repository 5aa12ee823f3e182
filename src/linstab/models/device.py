"""``resolve_device``: a device name checked against what this machine has, before any work."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None, auto: bool = False) -> torch.device:
    """The :class:`torch.device` for ``device``, refused with a clear error when unusable here.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a :class:`torch.device`); ``None``:
            CUDA when available and ``auto``, else the CPU.
        auto: let ``None`` pick CUDA when it is available.

    Raises:
        TypeError: for a device that is neither a string nor a :class:`torch.device`.
        ValueError: for an unknown device name, a device type other than CPU and CUDA, CUDA
            when this torch has no usable GPU, or a GPU index beyond the ones present.
    """
    if device is None:
        return torch.device("cuda" if auto and torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {str(device)!r}: expected 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {str(device)!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available ({why}); use 'cpu'")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(
                f"device {str(device)!r} requested but only {n} GPU(s) are visible (cuda:0..{n - 1})"
            )
    return dev
