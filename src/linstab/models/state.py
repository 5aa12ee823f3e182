"""A module's parameters and buffers cast to a dtype, for functional calls that leave the
user's module unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def cast_state(module: torch.nn.Module, dtype: torch.dtype, copy: bool = False) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a module, floating ones cast to ``dtype`` (for functional_call).

    Args:
        module: the module.
        dtype: the floating dtype.
        copy: copy every tensor, also those already in ``dtype`` (a snapshot that later edits
            of the module's weights do not reach).
    """
    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point():
            state[name] = t.detach().to(dtype, copy=copy)
        else:
            state[name] = t.detach().clone() if copy else t
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
