"""A module's parameters and buffers cast to a dtype, for functional calls that leave the
user's module unchanged.
"""

from __future__ import annotations

import torch


def cast_state(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a module, floating ones cast to ``dtype`` (for functional_call)."""
    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        state[name] = t.detach().to(dtype) if t.is_floating_point() else t
    return state
