"""Closed-form unit Jacobians (Appendix A, generalized to chains of conv + BN (+ activation)):
``J v = D_out (alpha S v + B_L C_L D_{L-1} ... D_1 B_1 C_1 v)``.
"""

from __future__ import annotations

import torch

from .base import LinearOperator

_SMOOTH_ELEMENTWISE = (
    torch.nn.Softplus,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.ELU,
    torch.nn.LeakyReLU,
    torch.nn.Tanh,
    torch.nn.Sigmoid,
    torch.nn.Identity,
)


def activation_derivative(act: torch.nn.Module | None, z: torch.Tensor) -> torch.Tensor | None:
    """Elementwise derivative ``act'(z)``; ``None`` for no activation.

    ReLU uses the convention ``relu'(0) = 0`` (as PyTorch's autograd does), so the closed form
    and autodiff agree exactly. Other supported elementwise activations (softplus, GELU, SiLU,
    ELU, leaky ReLU, tanh, sigmoid) are differentiated with ``torch.func.jvp``.

    Raises:
        NotImplementedError: for activations not known to be elementwise.
    """
    if act is None:
        return None
    if isinstance(act, torch.nn.ReLU):
        return (z > 0).to(z.dtype)
    if isinstance(act, _SMOOTH_ELEMENTWISE):
        # on a copy: an in-place activation (``nn.SiLU(inplace=True)``) would overwrite ``z``
        return torch.func.jvp(act, (z.clone(),), (torch.ones_like(z),))[1]
    raise NotImplementedError(f"no closed-form derivative for activation {type(act).__name__}")


class ConvBNLinearization:
    """One convolution + batch norm (+ activation) of a unit, linearized at a point.

    Attributes:
        weight: conv kernel ``(C_out, C_in/groups, k, k)`` in the operator's dtype.
        stride, padding, dilation, groups: conv geometry.
        scale: BN scale ``gamma / sqrt(running_var + eps)`` per output channel, ``(C_out,)``.
        deriv: activation derivative at the point, ``(C_out, H, W)``, or ``None``.
        in_hw, out_hw: spatial sizes of the conv's input and output.
    """

    def __init__(self, block: torch.nn.Module, z_in: torch.Tensor, dtype: torch.dtype) -> None:
        conv = block.conv
        if not isinstance(conv, torch.nn.Conv2d) or conv.padding_mode != "zeros":
            raise NotImplementedError("closed form needs a Conv2d with zero padding")
        if isinstance(conv.padding, str):
            raise NotImplementedError("closed form needs numeric conv padding")
        self.weight = conv.weight.detach().to(dtype)
        bias = conv.bias.detach().to(dtype) if conv.bias is not None else None
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        bn = getattr(block, "bn", None)
        c_out = self.weight.shape[0]
        if bn is None or isinstance(bn, torch.nn.Identity):
            self.scale = torch.ones(c_out, dtype=dtype, device=self.weight.device)
            shift = torch.zeros_like(self.scale)
        else:
            if not isinstance(bn, torch.nn.BatchNorm2d) or bn.running_var is None:
                raise NotImplementedError("closed form needs BatchNorm2d with running statistics")
            var = bn.running_var.detach().to(dtype)
            mean = bn.running_mean.detach().to(dtype)
            gamma = bn.weight.detach().to(dtype) if bn.weight is not None else torch.ones_like(var)
            beta = bn.bias.detach().to(dtype) if bn.bias is not None else torch.zeros_like(var)
            self.scale = gamma / torch.sqrt(var + bn.eps)
            shift = beta - mean * self.scale
        z = torch.nn.functional.conv2d(
            z_in, self.weight, bias, self.stride, self.padding, self.dilation, self.groups
        )
        z = z * self.scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        self.preactivation = z[0]
        act = getattr(block, "activ", None)
        self.deriv = activation_derivative(act, z[0])
        self.output = act(z.clone()) if act is not None else z  # ``preactivation`` kept (in-place act)
        self.in_hw = tuple(z_in.shape[-2:])
        self.out_hw = tuple(z.shape[-2:])

    # On the CPU, float64 conv2d / conv_transpose2d take a slow path, while the input-gradient
    # kernel (``torch.nn.grad.conv2d_input``) is much faster (measured in docs/spectra.md).
    # A stride-1 "same" convolution is the input gradient of the flipped, transposed kernel, so
    # float64 products use that kernel; results agree to round-off.
    def _fast64(self, t: torch.Tensor) -> bool:
        return t.dtype == torch.float64 and t.device.type == "cpu"

    def conv(self, V: torch.Tensor) -> torch.Tensor:
        """``B C V`` on a batch ``(B, C_in, H, W)`` (no activation derivative)."""
        k = self.weight.shape[-2:]
        same = (
            self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and all(k[i] % 2 == 1 and self.padding[i] == k[i] // 2 for i in range(2))
        )
        if same and self._fast64(V):
            if not hasattr(self, "_weight_flip"):
                self._weight_flip = self.weight.transpose(0, 1).flip(-1, -2).contiguous()
            size = (V.shape[0], self.weight.shape[0], *V.shape[-2:])
            y = torch.nn.grad.conv2d_input(size, self._weight_flip, V, 1, self.padding)
        else:
            y = torch.nn.functional.conv2d(
                V, self.weight, None, self.stride, self.padding, self.dilation, self.groups
            )
        return y * self.scale.view(1, -1, 1, 1)

    def conv_t(self, W: torch.Tensor) -> torch.Tensor:
        """``C^T B W`` on a batch ``(B, C_out, H', W')``."""
        W = W * self.scale.view(1, -1, 1, 1)
        if self._fast64(W):
            size = (W.shape[0], self.weight.shape[1] * self.groups, *self.in_hw)
            return torch.nn.grad.conv2d_input(
                size, self.weight, W, self.stride, self.padding, self.dilation, self.groups
            )
        k = self.weight.shape[-2:]
        out_pad = tuple(
            self.in_hw[i]
            - (
                (self.out_hw[i] - 1) * self.stride[i]
                - 2 * self.padding[i]
                + self.dilation[i] * (k[i] - 1)
                + 1
            )
            for i in range(2)
        )
        return torch.nn.functional.conv_transpose2d(
            W, self.weight, None, self.stride, self.padding, out_pad, self.groups, self.dilation
        )


class UnitJacobian(LinearOperator):
    """Closed-form Jacobian of a :class:`~linstab.models.ResidualUnit` at a point (Appendix A).

    ``J v = D_out (alpha S v + B_L C_L D_{L-1} B_{L-1} C_{L-1} ... D_1 B_1 C_1 v)`` with
    activation derivatives ``D`` (0/1 masks for ReLU), BN scales ``B``, convolutions ``C`` and
    the shortcut ``S`` (identity, option-A subsample + zero channel padding, or option-B 1x1
    conv + BN scale). All masks and scales are computed once, here; products are convolutions.
    The adjoint uses ``conv_transpose2d`` with the output padding that restores the input size.

    Args:
        unit: the residual unit (a linstab ``ResidualUnit``; see :mod:`linstab.models.adapters`).
        x: the point, ``(C, H, W)`` or ``(1, C, H, W)``.
        dtype: computation dtype (float32 or float64).
        label: what the operator is (the unit address), kept as :attr:`label`.

    Attributes:
        blocks: list of :class:`ConvBNLinearization`, the body in order.
        shortcut_kind: ``"identity"``, ``"subsample-pad"`` or ``"conv-bn"``.
        shortcut: :class:`ConvBNLinearization` for ``"conv-bn"``, the ``SubsamplePad`` module
            for ``"subsample-pad"``, ``None`` for the identity.
        alpha: skip-connection scale.
        out_deriv: derivative of the outer activation, ``(C_out, H', W')``.
        output: the unit's output at the point, ``(C_out, H', W')``.
    """

    def __init__(
        self, unit: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, label: str | None = None
    ) -> None:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        x = x.detach().to(dtype)
        h = x
        self.blocks = []
        for blk in unit.body.children():
            lin = ConvBNLinearization(blk, h, dtype)
            self.blocks.append(lin)
            h = lin.output
        kind = unit.shortcut_kind
        self.shortcut_kind = kind
        if kind == "identity":
            self.shortcut = None
            skip = x
        elif kind == "conv-bn":
            self.shortcut = ConvBNLinearization(unit.shortcut, x, dtype)
            skip = self.shortcut.output
        else:
            self.shortcut = unit.shortcut
            skip = self.shortcut(x)
        self.alpha = float(getattr(unit, "alpha", 1.0))
        pre = self.alpha * skip + h
        self.out_deriv = activation_derivative(unit.activ, pre[0])
        self.output = unit.activ(pre.clone())[0]
        self.point = x[0]
        super().__init__(x.shape[1:], self.output.shape, dtype, x.device, label=label)

    # -- pieces, also used by the structured spectra ------------------------------------------
    def body(self, V: torch.Tensor) -> torch.Tensor:
        """``J_R V``: the residual branch's Jacobian on a batch."""
        for blk in self.blocks:
            V = blk.conv(V)
            if blk.deriv is not None:
                V = V * blk.deriv
        return V

    def body_t(self, W: torch.Tensor) -> torch.Tensor:
        """``J_R^T W`` on a batch."""
        for blk in reversed(self.blocks):
            if blk.deriv is not None:
                W = W * blk.deriv
            W = blk.conv_t(W)
        return W

    def skip(self, V: torch.Tensor) -> torch.Tensor:
        """``S V``: the shortcut map on a batch (without ``alpha``)."""
        if self.shortcut_kind == "identity":
            return V
        if self.shortcut_kind == "conv-bn":
            return self.shortcut.conv(V)
        return self.shortcut(V)

    def skip_t(self, W: torch.Tensor) -> torch.Tensor:
        """``S^T W`` on a batch."""
        if self.shortcut_kind == "identity":
            return W
        if self.shortcut_kind == "conv-bn":
            return self.shortcut.conv_t(W)
        sp = self.shortcut
        c_in = self.in_shape[0]
        out = torch.zeros((W.shape[0], *self.in_shape), dtype=W.dtype, device=W.device)
        out[:, :, :: sp.stride, :: sp.stride] = W[:, sp.pad_front : sp.pad_front + c_in]
        return out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        y = self.body(V)
        s = self.skip(V)
        y = y + (s if self.alpha == 1.0 else self.alpha * s)
        return y if self.out_deriv is None else y * self.out_deriv

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        if self.out_deriv is not None:
            W = W * self.out_deriv
        s = self.skip_t(W)
        return self.body_t(W) + (s if self.alpha == 1.0 else self.alpha * s)
