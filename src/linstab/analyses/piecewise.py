"""Which nonlinearities a unit's forward pass applies to its input: one traced forward pass.

The Taylor test (:mod:`linstab.analyses.taylor`) may conclude that a unit is *exactly* linear
near a point (its remainder drops to round-off once no ReLU crosses zero) only when the unit is
piecewise linear. That is decided here from the torch functions one forward pass calls
(modules and functional calls alike, seen through a :class:`~torch.overrides.TorchFunctionMode`),
following which tensors depend on the input:

* an op on input-dependent tensors that is linear in them (convolution, batch norm in eval,
  sums, reshapes, pooling by averaging, ...) or piecewise linear (ReLU and its kin, max
  pooling, ``abs``, ``clamp``, comparisons, ``where``) keeps the unit piecewise linear;
* a product of two input-dependent tensors (``x * x``, ``q @ k``, a dynamic convolution), a
  division *by* one, a power other than 1, or a smooth op (tanh, sigmoid, softmax, exp,
  GroupNorm / LayerNorm / InstanceNorm, which divide by the input's own statistics, ...) makes
  it smooth-nonlinear;
* an op linstab does not know is listed with a ``?`` and the unit is not taken as piecewise
  linear (the Taylor test then reads the order instead of claiming exactness).

Ops on tensors that do not depend on the input (weights, constants) are ignored.
"""

from __future__ import annotations

import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

__all__ = ["PIECEWISE_LINEAR", "NONLINEAR", "OpRecorder"]

PIECEWISE_LINEAR = frozenset(
    {"relu", "relu6", "hardtanh", "leaky_relu", "prelu", "rrelu", "threshold", "hardsigmoid"}
)
"""Activations (torch function names, without a trailing ``_``) that are piecewise linear."""

NONLINEAR = frozenset(
    {
        "silu",
        "gelu",
        "softplus",
        "tanh",
        "sigmoid",
        "elu",
        "selu",
        "celu",
        "mish",
        "hardswish",
        "logsigmoid",
        "softsign",
        "tanhshrink",
        "glu",
    }
)
"""Activations (torch function names, without a trailing ``_``) that are not piecewise linear."""

_SMOOTH_OPS = frozenset(
    {
        # normalizations by the input's own statistics
        "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm", "normalize",
        # smooth elementwise and reductions
        "softmax", "log_softmax", "softmin", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
        "sqrt", "rsqrt", "reciprocal", "erf", "erfc", "sin", "cos", "tan", "atan", "asin", "acos",
        "sinh", "cosh", "asinh", "acosh", "atanh", "sinc", "var", "std", "var_mean", "std_mean",
        "norm", "vector_norm", "matrix_norm", "logsumexp", "logaddexp", "prod", "cumprod",
        "scaled_dot_product_attention", "multi_head_attention_forward", "logit",
        "xlogy", "hypot", "atan2", "lerp",
    }
)  # fmt: skip
"""Smooth nonlinear ops other than activations (names without a trailing ``_``)."""

_LINEAR_OPS = frozenset(
    {
        "batch_norm", "add", "sub", "subtract", "rsub", "neg", "negative", "positive", "sum", "mean",
        "nansum", "cumsum", "diff", "trace", "cat", "concat", "concatenate", "stack", "hstack",
        "vstack", "dstack", "flatten", "unflatten", "view", "view_as", "reshape", "reshape_as",
        "contiguous", "permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t",
        "getitem", "setitem", "narrow", "select", "index_select", "take", "gather", "index_add",
        "scatter_add", "split", "split_with_sizes", "tensor_split", "chunk", "unbind", "pad",
        "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
        "adaptive_avg_pool3d", "lp_pool2d", "interpolate", "upsample", "upsample_nearest",
        "upsample_bilinear", "grid_sample", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
        "native_channel_shuffle", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
        "feature_alpha_dropout", "to", "float", "double", "half", "bfloat16", "type", "type_as",
        "clone", "detach", "expand", "expand_as", "repeat", "repeat_interleave", "tile", "squeeze",
        "unsqueeze", "roll", "flip", "fliplr", "flipud", "rot90", "diagonal", "as_strided",
        "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros",
        "new_ones", "new_empty", "new_full", "new_tensor", "size", "dim", "numel", "get", "len", "iter",
        "format", "repr", "stride", "storage_offset", "data_ptr", "is_contiguous", "is_floating_point",
        "element_size", "identity", "copy", "fill", "zero", "unfold", "fold",
        "im2col", "col2im", "masked_fill", "masked_select", "index_put", "put", "narrow_copy",
        "expand_copy", "view_copy", "real", "conj", "resolve_conj", "resolve_neg", "einsum_path",
        "embedding", "radd", "iadd", "isub", "pos", "requires_grad",
    }
)  # fmt: skip
"""Ops that are linear in each input-dependent argument (products, divisions and powers are
checked by their own sets below). Names are compared without underscores around them
(:func:`_name`): in-place ``copy_`` is ``"copy"``."""

_PIECEWISE_OPS = frozenset(
    {
        "abs", "absolute", "clamp", "clip", "clamp_min", "clamp_max", "max", "min", "amax", "amin",
        "aminmax", "maximum", "minimum", "fmax", "fmin", "max_pool1d", "max_pool2d", "max_pool3d",
        "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "fractional_max_pool2d",
        "where", "masked_scatter", "gt", "lt", "ge", "le", "eq", "ne", "greater", "less",
        "greater_equal", "less_equal", "not_equal", "sign", "sgn", "signbit", "heaviside", "floor",
        "ceil", "round", "trunc", "frac",
        "hardshrink", "softshrink", "sort", "argsort", "topk", "kthvalue", "median", "msort",
        "argmax", "argmin", "logical_and", "logical_or", "logical_not", "logical_xor", "isnan",
        "isinf", "isfinite", "any", "all", "nonzero", "count_nonzero", "bool", "long", "int",
        "and", "or", "invert", "xor", "bucketize", "searchsorted", "cummax", "cummin", "item",
        "tolist", "index", "allclose", "equal", "rand", "ror", "rxor",
    }
)  # fmt: skip
"""Piecewise-linear (or piecewise-constant) ops besides the activations."""

_PRODUCTS = frozenset(
    {
        "mul", "multiply", "matmul", "mm", "bmm", "mv", "dot", "vdot", "inner", "outer", "ger",
        "kron", "tensordot", "einsum", "bilinear", "addmm", "addbmm", "baddbmm", "addmv", "addr",
        "addcmul", "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "rmul", "imul", "rmatmul",
    }
)  # fmt: skip
"""Ops linear in each argument, bilinear in two: nonlinear when two arguments depend on the input."""

_DIVISIONS = frozenset({"div", "divide", "true_divide", "truediv", "itruediv", "idiv", "floor_divide"})
_REVERSED = frozenset({"rtruediv", "rdiv", "rfloordiv", "rpow"})  # the tensor is the divisor/exponent
_POWERS = frozenset({"pow", "ipow", "float_power", "square"})


def _name(func) -> str:
    """A torch function's name without underscores around it: ``relu_`` and ``relu`` alike,
    ``Tensor.__mul__`` is ``"mul"``, ``Tensor.__rtruediv__`` is ``"rtruediv"``.
    """
    return (getattr(func, "__name__", "") or repr(func)).strip("_")


class OpRecorder(TorchFunctionMode):
    """Records, over the forward pass it is active in, the nonlinear ops applied to tensors that
    depend on ``source`` (the unit's input), in first-call order.

    Attributes:
        names: activations by torch function name (``"relu"``, ``"silu"``), other smooth ops
            (``"group_norm"``, ``"softmax"``), products of two input-dependent tensors
            (``"mul(x, x)"``), divisions by one (``"div(., x)"``), powers (``"pow"``) and
            unknown ops on input-dependent tensors (``"NAME?"``).
        seen: whether any op on an input-dependent tensor was seen.
    """

    def __init__(self, source: torch.Tensor) -> None:
        super().__init__()
        self.names: list[str] = []
        self.seen = False
        self._dep: dict[int, weakref.ref] = {}
        self._mark(source)

    def _mark(self, t) -> None:
        if isinstance(t, torch.Tensor):
            self._dep[id(t)] = weakref.ref(t)

    def _depends(self, t) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        ref = self._dep.get(id(t))
        return ref is not None and ref() is t

    @property
    def piecewise_linear(self) -> bool:
        """Whether every op on the input was linear or piecewise linear (and some op was seen)."""
        return self.seen and all(n in PIECEWISE_LINEAR for n in self.names)

    def _add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def _classify(self, name: str, args, kwargs) -> None:
        if name in PIECEWISE_LINEAR or name in NONLINEAR or name in _SMOOTH_OPS:
            self._add(name)
        elif name in _PRODUCTS:
            if sum(self._depends(t) for t in tree_leaves((args, kwargs))) >= 2:
                self._add(f"{name}(x, x)")
        elif name in _DIVISIONS:
            if any(self._depends(t) for t in tree_leaves((args[1:], kwargs))):
                self._add(f"{name}(., x)")
        elif name in _REVERSED:
            self._add(f"{name}(., x)")  # 1 / x, 2 ** x: the input-dependent tensor is args[0]
        elif name in _POWERS:
            exponent = args[1] if len(args) > 1 else kwargs.get("exponent", 2)
            if name == "square" or not (isinstance(exponent, int | float) and exponent == 1):
                self._add("pow")
        elif name == "batch_norm":
            training = args[5] if len(args) > 5 else kwargs.get("training", False)
            if training:
                self._add("batch_norm(training)")  # the batch's own statistics
        elif name not in _LINEAR_OPS and name not in _PIECEWISE_OPS:
            self._add(f"{name}?")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if any(self._depends(t) for t in tree_leaves((args, kwargs))):
            self.seen = True
            name = _name(func)
            self._classify(name, args, kwargs)
            for t in tree_leaves(out):
                self._mark(t)
            if name == "setitem" and args:  # x[i] = y: x now depends on the input
                self._mark(args[0])
        return out
