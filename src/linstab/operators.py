"""Matrix-free linear operators: one abstraction for units, stages and networks.

An operator maps tensors of shape ``in_shape`` to tensors of shape ``out_shape`` (for a
residual unit, ``(C, H, W)`` activation maps). Its matrix has shape ``(n_out, n_in)`` with
``n = prod(shape)`` in row-major (C-order) flattening.

Accepted inputs of ``op @ v`` / :meth:`LinearOperator.matmat` (``n_in = prod(in_shape)``):

* ``(*in_shape)``: one vector as a map, returns ``(*out_shape)``;
* ``(B, *in_shape)``: a batch of maps, returns ``(B, *out_shape)``;
* ``(n_in,)``: one flat vector, returns ``(n_out,)``;
* ``(n_in, B)``: ``B`` flat column vectors, returns ``(n_out, B)``.

NumPy arrays are accepted too and NumPy arrays are returned. The dtype of a tensor must
match the operator's (no silent casting); NumPy inputs are converted to the operator's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "LinearOperator",
    "ComposedOperator",
    "AdjointOperator",
    "DenseOperator",
    "IdentityOperator",
    "CallableOperator",
]


def _prod(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


class LinearOperator:
    """Base class: subclasses implement ``_matmat`` and ``_rmatmat`` on ``(B, *shape)`` batches.

    Attributes:
        in_shape: shape of one input map.
        out_shape: shape of one output map.
        dtype: the floating dtype the operator computes in.
        device: the torch device of its cached tensors.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.dtype = dtype
        self.device = torch.device(device)

    # -- to be implemented -------------------------------------------------------------------
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # (B, *in_shape) -> (B, *out_shape)
        raise NotImplementedError

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:  # (B, *out_shape) -> (B, *in_shape)
        raise NotImplementedError

    # -- shape handling ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_out, n_in)``: the shape of the operator's matrix."""
        return (_prod(self.out_shape), _prod(self.in_shape))

    def _apply(
        self,
        x: torch.Tensor | np.ndarray,
        shape_in: tuple[int, ...],
        shape_out: tuple[int, ...],
        fn: Callable[[torch.Tensor], torch.Tensor],
        what: str,
    ) -> torch.Tensor | np.ndarray:
        as_numpy = isinstance(x, np.ndarray)
        if as_numpy:
            x = torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(x)}")
        if x.dtype != self.dtype:
            raise TypeError(
                f"{what}: operator computes in {self.dtype}, input has dtype {x.dtype}; "
                f"convert it with .to({self.dtype})"
            )
        n = _prod(shape_in)
        shp = tuple(x.shape)
        x = x.to(self.device)
        if len(shape_in) > 1 and shp == shape_in:
            out = fn(x.unsqueeze(0))[0]
        elif len(shape_in) > 1 and shp[1:] == shape_in:
            out = fn(x)
        elif x.ndim == 1 and shp[0] == n:
            out = fn(x.reshape(1, *shape_in)).reshape(-1)
        elif x.ndim == 2 and shp[0] == n:
            b = shp[1]
            out = fn(x.T.reshape(b, *shape_in)).reshape(b, -1).T
        elif len(shape_in) == 1 and x.ndim == 2 and shp[1] == n:
            out = fn(x)
        else:
            raise ValueError(
                f"{what}: expected shape {shape_in}, (B, *{shape_in}), ({n},) or ({n}, B); "
                f"got {shp}"
            )
        return out.detach().cpu().numpy() if as_numpy else out

    def matmat(self, V: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``J V`` for one or a batch of vectors (see the module docstring for shapes)."""
        return self._apply(V, self.in_shape, self.out_shape, self._matmat, "matmat")

    def rmatmat(self, W: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``J^T W`` for one or a batch of vectors (shapes as in :meth:`matmat`, swapped)."""
        return self._apply(W, self.out_shape, self.in_shape, self._rmatmat, "rmatmat")

    matvec = matmat
    rmatvec = rmatmat

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return ComposedOperator([self, other])
        return self.matmat(other)

    def adjoint(self) -> LinearOperator:
        """The adjoint (transpose) operator, sharing this operator's cached state."""
        return AdjointOperator(self)

    @property
    def T(self) -> LinearOperator:  # noqa: N802 - matrix convention
        return self.adjoint()

    # -- exports -----------------------------------------------------------------------------
    def to_scipy(self, dtype: np.dtype | type | None = None):
        """A :class:`scipy.sparse.linalg.LinearOperator` on flat float vectors.

        Args:
            dtype: NumPy dtype advertised to SciPy (default: matching the operator's dtype).
        """
        from scipy.sparse.linalg import LinearOperator as SciPyOperator

        np_dtype = np.dtype(dtype) if dtype is not None else _numpy_dtype(self.dtype)
        n_out, n_in = self.shape

        def mv(v: np.ndarray) -> np.ndarray:
            return self.matmat(np.asarray(v).reshape(n_in)).astype(np_dtype, copy=False)

        def rmv(w: np.ndarray) -> np.ndarray:
            return self.rmatmat(np.asarray(w).reshape(n_out)).astype(np_dtype, copy=False)

        def mm(V: np.ndarray) -> np.ndarray:
            return self.matmat(np.asarray(V).reshape(n_in, -1)).astype(np_dtype, copy=False)

        def rmm(W: np.ndarray) -> np.ndarray:
            return self.rmatmat(np.asarray(W).reshape(n_out, -1)).astype(np_dtype, copy=False)

        return SciPyOperator(
            (n_out, n_in), matvec=mv, rmatvec=rmv, matmat=mm, rmatmat=rmm, dtype=np_dtype
        )

    def materialize(
        self, dtype: torch.dtype | None = None, batch_size: int = 256, progress: bool = False
    ) -> torch.Tensor:
        """The dense matrix ``(n_out, n_in)``, built from blocks of identity columns.

        When ``n_out < n_in`` the rows are built from adjoint products instead.

        Args:
            dtype: dtype of the returned matrix (default: the operator's; computation is
                always in the operator's dtype).
            batch_size: identity columns per block.
            progress: show a progress bar.
        """
        n_out, n_in = self.shape
        by_rows = n_out < n_in
        n = n_out if by_rows else n_in
        fn = self._rmatmat if by_rows else self._matmat
        shape_in = self.out_shape if by_rows else self.in_shape
        out_dtype = dtype or self.dtype
        M = torch.empty((n, n_in if by_rows else n_out), dtype=out_dtype, device=self.device)
        starts = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="materialize", unit="block")
        for s in starts:
            e = min(s + batch_size, n)
            E = torch.zeros((e - s, n), dtype=self.dtype, device=self.device)
            E[torch.arange(e - s), torch.arange(s, e)] = 1
            M[s:e] = fn(E.reshape(e - s, *shape_in)).reshape(e - s, -1).to(out_dtype)
        return M if by_rows else M.T.contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(in_shape={self.in_shape}, out_shape={self.out_shape}, "
            f"dtype={self.dtype})"
        )


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)


class AdjointOperator(LinearOperator):
    """The adjoint of an operator (swaps ``_matmat`` and ``_rmatmat``)."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.out_shape, op.in_shape, op.dtype, op.device)
        self.op = op

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.op._rmatmat(V)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        return self.op._matmat(W)

    def adjoint(self) -> LinearOperator:
        return self.op


class ComposedOperator(LinearOperator):
    """A product ``A_1 A_2 ... A_m`` (``A_m`` applied first), as ``A_1 @ A_2 @ ... @ A_m``.

    Args:
        ops: the factors, leftmost first. Nested compositions are flattened.
    """

    def __init__(self, ops: Sequence[LinearOperator]) -> None:
        flat: list[LinearOperator] = []
        for op in ops:
            if not isinstance(op, LinearOperator):
                raise TypeError(f"can only compose LinearOperators, got {type(op).__name__}")
            flat.extend(op.ops if isinstance(op, ComposedOperator) else [op])
        if not flat:
            raise ValueError("a composition needs at least one operator")
        for left, right in zip(flat[:-1], flat[1:], strict=True):
            if left.in_shape != right.out_shape:
                raise ValueError(
                    f"cannot compose: {left!r} takes {left.in_shape}, but {right!r} gives "
                    f"{right.out_shape}"
                )
            if left.dtype != right.dtype:
                raise TypeError(f"cannot compose operators of dtypes {left.dtype}, {right.dtype}")
        super().__init__(flat[-1].in_shape, flat[0].out_shape, flat[0].dtype, flat[0].device)
        self.ops = flat

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.ops):
            V = op._matmat(V)
        return V

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            W = op._rmatmat(W)
        return W

    def __len__(self) -> int:
        return len(self.ops)


class DenseOperator(LinearOperator):
    """An explicit matrix as an operator (tests, small problems).

    Args:
        matrix: ``(n_out, n_in)`` tensor.
        in_shape: input map shape (default ``(n_in,)``).
        out_shape: output map shape (default ``(n_out,)``).
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        in_shape: Sequence[int] | None = None,
        out_shape: Sequence[int] | None = None,
    ) -> None:
        if matrix.ndim != 2:
            raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
        in_shape = tuple(in_shape) if in_shape is not None else (matrix.shape[1],)
        out_shape = tuple(out_shape) if out_shape is not None else (matrix.shape[0],)
        if _prod(in_shape) != matrix.shape[1] or _prod(out_shape) != matrix.shape[0]:
            raise ValueError(
                f"matrix {tuple(matrix.shape)} does not fit shapes {out_shape} x {in_shape}"
            )
        super().__init__(in_shape, out_shape, matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        b = V.shape[0]
        return (V.reshape(b, -1) @ self.matrix.T).reshape(b, *self.out_shape)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        b = W.shape[0]
        return (W.reshape(b, -1) @ self.matrix).reshape(b, *self.in_shape)

    def materialize(self, dtype=None, batch_size: int = 256, progress: bool = False):
        return self.matrix.to(dtype or self.dtype).clone()


class IdentityOperator(LinearOperator):
    """The identity on maps of a given shape."""

    def __init__(self, shape: Sequence[int], dtype: torch.dtype, device="cpu") -> None:
        super().__init__(shape, shape, dtype, device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return V

    _rmatmat = _matmat


class CallableOperator(LinearOperator):
    """An operator from two batched callables ``(B, *in) -> (B, *out)`` and its adjoint."""

    def __init__(
        self,
        matmat: Callable[[torch.Tensor], torch.Tensor],
        rmatmat: Callable[[torch.Tensor], torch.Tensor],
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        dtype: torch.dtype,
        device="cpu",
    ) -> None:
        super().__init__(in_shape, out_shape, dtype, device)
        self._mm = matmat
        self._rmm = rmatmat

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._mm(V)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        return self._rmm(W)


# ============================================================================================
# Unit Jacobians
# ============================================================================================
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
        return torch.func.jvp(act, (z,), (torch.ones_like(z),))[1]
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
        self.output = act(z) if act is not None else z
        self.in_hw = tuple(z_in.shape[-2:])
        self.out_hw = tuple(z.shape[-2:])

    # On the CPU, float64 conv2d / conv_transpose2d take a slow path, while the input-gradient
    # kernel (``torch.nn.grad.conv2d_input``) is about 4x faster (measured, 256 x 16 x 32 x 32).
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
            - ((self.out_hw[i] - 1) * self.stride[i] - 2 * self.padding[i]
               + self.dilation[i] * (k[i] - 1) + 1)
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
        unit: the residual unit (a linstab ``ResidualUnit``; see :mod:`linstab.units`).
        x: the point, ``(C, H, W)`` or ``(1, C, H, W)``.
        dtype: computation dtype (float32 or float64).

    Attributes:
        blocks: list of :class:`ConvBNLinearization`, the body in order.
        shortcut_kind: ``"identity"``, ``"subsample-pad"`` or ``"conv-bn"``.
        shortcut: :class:`ConvBNLinearization` for ``"conv-bn"``, the ``SubsamplePad`` module
            for ``"subsample-pad"``, ``None`` for the identity.
        alpha: skip-connection scale.
        out_deriv: derivative of the outer activation, ``(C_out, H', W')``.
        output: the unit's output at the point, ``(C_out, H', W')``.
    """

    def __init__(self, unit: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
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
        self.output = unit.activ(pre)[0]
        self.point = x[0]
        super().__init__(x.shape[1:], self.output.shape, dtype, x.device)

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


def cast_state(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a module, floating ones cast to ``dtype`` (for functional_call)."""
    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        state[name] = t.detach().to(dtype) if t.is_floating_point() else t
    return state


class AutodiffJacobian(LinearOperator):
    """Generic Jacobian of any module at a point via ``torch.func`` reverse mode.

    The forward pass runs once, at construction (``torch.func.vjp``). ``J^T W`` applies the
    cached vjp; ``J V`` is the vjp of that (linear) vjp function at zero, so it reuses the same
    cached graph instead of recomputing the forward pass. Both are batched with ``torch.vmap``.
    (``torch.func.linearize`` is not used: its traced graph can mutate captured constants when
    the module uses in-place ops such as ``out += identity``, giving wrong results on later
    calls.) The module runs through ``torch.func.functional_call`` with its parameters and
    buffers cast to ``dtype``, so it is never changed. It must be in eval mode.

    Args:
        module: the map (a residual unit, a stage, ...), taking ``(1, *in_shape)``.
        x: the point, ``in_shape`` or ``(1, *in_shape)``.
        dtype: computation dtype.
    """

    def __init__(self, module: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
        x = x.detach().to(dtype)
        if x.ndim >= 1 and x.shape[0] == 1:
            x = x[0]
        state = cast_state(module, dtype)

        def f(z: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, state, (z.unsqueeze(0),))[0]

        self.output, vjp_fn = torch.func.vjp(f, x)
        self._vjp = lambda w: vjp_fn(w)[0]
        _, jvp_fn = torch.func.vjp(self._vjp, torch.zeros_like(self.output))
        self._jvp = lambda v: jvp_fn(v)[0]
        self.point = x
        super().__init__(x.shape, self.output.shape, dtype, x.device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.vmap(self._jvp)(V)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        return torch.vmap(self._vjp)(W)
