"""operators"""

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
    "UnitFactors",
    "UnitJacobian",
    "activation_derivative",
    "conv_columns",
    "factor_operator",
    "factor_plan",
    "is_mask",
    "structured_plan",
    "unit_factors",
    "unit_products",
]
