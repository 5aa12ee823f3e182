"""Unit (or any module's) Jacobians by automatic differentiation: ``J^T w`` is a cached vjp,
``J v`` the vjp of that vjp.
"""

from __future__ import annotations

import torch

from ..models.state import cast_state, kept_tensor_attributes
from .base import LinearOperator


class AutodiffJacobian(LinearOperator):
    """Generic Jacobian of any module at a point via ``torch.func`` reverse mode.

    The forward pass runs once, at construction (``torch.func.vjp``). ``J^T W`` applies the
    cached vjp; ``J V`` is the vjp of that (linear) vjp function at zero, so it reuses the same
    cached graph instead of recomputing the forward pass. Both are batched with ``torch.vmap``.
    (``torch.func.linearize`` is not used: its traced graph can mutate captured constants when
    the module uses in-place ops such as ``out += identity``, giving wrong results on later
    calls.) The module runs through ``torch.func.functional_call`` with a copy of its parameters
    and buffers in ``dtype``: it is never changed, and the operator keeps the weights it was built
    with when the module's are edited later. It must be in eval mode.

    Args:
        module: the map (a residual unit, a stage, ...), taking ``(1, *in_shape)``.
        x: the point, ``in_shape`` or ``(1, *in_shape)``. Without ``in_shape``, a 4-D
            ``(1, C, H, W)`` or 2-D ``(1, n)`` tensor is read as a batch of one; any other
            tensor is the point itself (so a one-channel map ``(1, H, W)`` keeps its channel).
        dtype: computation dtype.
        label: what the operator is (the unit address), kept as :attr:`label`.
        in_shape: the shape of one input, when ``x``'s shape alone leaves it ambiguous.

    Raises:
        ValueError: ``x`` is neither ``in_shape`` nor ``(1, *in_shape)``, or ``torch.func`` cannot
            differentiate the module's forward pass (an in-place change of a tensor autograd needs,
            ``torch.utils.checkpoint``, an ``autograd.Function`` without ``setup_context``); the
            message names the module and torch's error.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        x: torch.Tensor,
        dtype: torch.dtype,
        label: str | None = None,
        in_shape: tuple[int, ...] | None = None,
    ) -> None:
        x = x.detach().to(dtype)
        if in_shape is not None:
            in_shape = tuple(int(d) for d in in_shape)
            if tuple(x.shape) == (1, *in_shape):
                x = x[0]
            elif tuple(x.shape) != in_shape:
                raise ValueError(f"x: expected shape {in_shape} or {(1, *in_shape)}, got {tuple(x.shape)}")
        elif x.ndim in (2, 4) and x.shape[0] == 1:
            x = x[0]  # a batch of one image (1, C, H, W) or vector (1, n)
        state = cast_state(module, dtype, copy=True)  # a snapshot, as the closed forms are

        def f(z: torch.Tensor) -> torch.Tensor:
            # a copy: a module may change its input in place (``x += out``), which functorch
            # refuses on the primal
            with kept_tensor_attributes(module):  # e.g. a pruned conv's ``weight``, set by a hook
                return torch.func.functional_call(module, state, (z.unsqueeze(0).clone(),))[0]

        name = label or type(module).__name__
        try:
            self.output, vjp_fn = torch.func.vjp(f, x)
            self._vjp = lambda w: vjp_fn(w)[0]
            _, jvp_fn = torch.func.vjp(self._vjp, torch.zeros_like(self.output))  # runs the backward once
            self._jvp = lambda v: jvp_fn(v)[0]
        except RuntimeError as exc:
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            if "inplace" in str(exc):
                raise ValueError(
                    f"{name}: its forward pass changes in place a tensor that autograd needs (e.g. "
                    "`x += out` or `out.add_(x)` before a layer that keeps it): write it out of place "
                    "(`x = x + out`) for an autodiff Jacobian"
                ) from None
            raise ValueError(
                f"{name}: torch.func cannot differentiate its forward pass in {dtype} "
                f"({type(exc).__name__}: {exc}); autodiff Jacobians are vector-Jacobian products of "
                "vector-Jacobian products under torch.func.vjp and torch.vmap, which refuse "
                "torch.utils.checkpoint, saved-tensor hooks and autograd.Functions without "
                "setup_context (or without a double backward): run the plain forward computation "
                "in eval mode"
            ) from exc
        self.point = x
        super().__init__(x.shape, self.output.shape, dtype, x.device, label=label)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.vmap(self._jvp)(V)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        return torch.vmap(self._vjp)(W)
