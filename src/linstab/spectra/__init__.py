"""spectra"""

from ..linalg.results import (
    METHODS,
    ROUTES,
    SOLVERS,
    BandCounts,
    ConvergenceWarning,
    SpectrumResult,
)
from ..operators.factors import FactorOperator, UnitFactors, factor_operator, unit_factors
from .bands import bands, count_from_values
from .spectrum import spectrum

__all__ = [
    "BandCounts",
    "ConvergenceWarning",
    "FactorOperator",
    "METHODS",
    "ROUTES",
    "SOLVERS",
    "SpectrumResult",
    "UnitFactors",
    "bands",
    "count_from_values",
    "factor_operator",
    "spectrum",
    "unit_factors",
]
