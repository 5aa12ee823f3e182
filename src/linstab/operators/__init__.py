"""Matrix-free linear operators: one abstraction for units, stages and networks.

An operator maps tensors of shape ``in_shape`` to tensors of shape ``out_shape`` (for a
residual unit, ``(C, H, W)`` activation maps). Its matrix has shape ``(n_out, n_in)`` with
``n = prod(shape)`` in row-major (C-order) flattening.

Accepted inputs of ``op @ v`` / :meth:`LinearOperator.matmat` (``n_in = prod(in_shape)``):

* ``(*in_shape)``: one vector as a map, returns ``(*out_shape)``;
* ``(B, *in_shape)``: a batch of maps, returns ``(B, *out_shape)``;
* ``(n_in,)``: one flat vector, returns ``(n_out,)``;
* ``(n_in, B)``: ``B`` flat column vectors, returns ``(n_out, B)``.

NumPy arrays are accepted too and NumPy arrays are returned. The dtype of an input, tensor or
NumPy array, must match the operator's (float32 or float64): a mismatch is a ``TypeError``, never
a silent cast (``x.to(op.dtype)`` / ``x.astype(...)`` converts). The SciPy export
(:meth:`LinearOperator.to_scipy`) is the one place that converts: SciPy's solvers choose their
vectors' dtype. :meth:`LinearOperator.materialize` returns float32 or float64 only.

Modules: :mod:`.base` (the operator contract and its algebra), :mod:`.closed_form` (unit
Jacobians of Appendix A), :mod:`.autodiff` (any module, by ``torch.func``), :mod:`.factors`
(sparse factors ``J = D_out (alpha S + U W)`` of closed-form units), :mod:`.rows` (the active
rows of an operator).
"""

from .autodiff import AutodiffJacobian
from .base import (
    AdjointOperator,
    CallableOperator,
    ComposedOperator,
    DenseOperator,
    IdentityOperator,
    LinearOperator,
)
from .closed_form import ConvBNLinearization, UnitJacobian, activation_derivative
from .factors import (
    FactorOperator,
    UnitFactors,
    conv_columns,
    factor_operator,
    factor_plan,
    is_mask,
    structured_plan,
    unit_factors,
    unit_products,
)
from .rows import RowSubset, output_mask

__all__ = [
    "AdjointOperator",
    "AutodiffJacobian",
    "CallableOperator",
    "ComposedOperator",
    "ConvBNLinearization",
    "DenseOperator",
    "FactorOperator",
    "IdentityOperator",
    "LinearOperator",
    "RowSubset",
    "UnitFactors",
    "UnitJacobian",
    "activation_derivative",
    "conv_columns",
    "factor_operator",
    "factor_plan",
    "is_mask",
    "output_mask",
    "structured_plan",
    "unit_factors",
    "unit_products",
]
