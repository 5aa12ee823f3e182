"""A module's parameters and buffers cast to a dtype, for functional calls that leave the
user's module unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def cast_state(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a module, floating ones cast to ``dtype`` (for functional_call)."""
    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        state[name] = t.detach().to(dtype) if t.is_floating_point() else t
    return state


@contextlib.contextmanager
def kept_tensor_attributes(module: torch.nn.Module) -> Iterator[None]:
    """Restore, on exit, every plain tensor attribute (not a parameter or buffer) of the module
    and its submodules.

    Forward pre-hooks such as ``torch.nn.utils.prune``'s set ``module.weight`` from the
    parameters at every call; in a functional call with the state cast to float64 (or under
    ``torch.func`` transforms) they would leave a float64 (or transform-wrapped) tensor on the
    user's module.
    """
    saved = [(m, {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}) for m in module.modules()]
    try:
        yield
    finally:
        for m, attrs in saved:
            for k, v in attrs.items():
                if vars(m).get(k) is not v:
                    setattr(m, k, v)
