"""Training precision: bf16 autocast where the hardware computes in bf16, float32 elsewhere."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "float32")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 ``avx512_bf16`` / ``amx_bf16`` flags).

    Elsewhere bf16 autocast would be emulated and slower than float32, so ``precision="auto"``
    falls back to float32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    if not ("avx512_bf16" in flags or "amx_bf16" in flags):
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else True


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: ``"bf16"`` or ``"float32"``.

    Args:
        precision: ``"auto"`` (bf16 on CUDA and on CPUs with native bf16, else float32),
            ``"bf16"`` or ``"float32"``.
        device: the training device.

    Raises:
        ValueError: for an unknown name.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "float32"
    return precision


def autocast(device: torch.device, precision: str = "float32") -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else a null context."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution weights are in the ``channels_last`` format."""
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
