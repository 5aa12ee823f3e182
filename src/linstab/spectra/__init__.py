"""Singular-value spectra of unit, stage and network Jacobians (paper Section 3.2, Figures 1-2).

Three questions are answered, each by the cheapest exact method the operator allows:

* :func:`spectrum` with ``method="exact"``: all singular values. A residual unit with an identity
  shortcut and ReLU masks is ``J = D_out (alpha I + U W)`` with ``U`` (``n x r``) and ``W``
  (``r x n``) factored through the masked inner layer with the fewest active units ``r``. On the
  ``m`` active outputs ``J J^T = alpha^2 I_m + Q M Q^T`` with ``Q = [U_S, (W^T)_S]`` and
  ``M = [[W W^T, alpha I], [alpha I, 0]]``: ``n - m`` singular values are 0, at least ``m - 2r``
  are exactly ``|alpha|`` and the rest come from a ``2r x 2r`` symmetric eigenproblem built from
  sparse matrices (columns of ``U`` and rows of ``W`` are single convolution kernels). Other
  operators (down-sampling units, stages, networks, autodiff Jacobians) use the dense route:
  a Gram matrix of the smaller side, restricted to active outputs where a mask is known, and
  ``eigvalsh`` (or ``svdvals`` for small matrices).
* ``method="topk"`` / ``"bottomk"``: ``k`` singular triplets by a restarted block Krylov method
  on batched operator products (torch only, so it runs wherever the operator runs), or SciPy
  ``svds`` (``solver="arpack"``, ``"propack"``, ``"lobpcg"``). Residuals are reported and a
  :class:`ConvergenceWarning` is issued when the tolerance is not met.
* :func:`bands`: exact counts of singular values above, inside and below a band and at zero,
  by Sylvester's law of inertia (block ``LDL^T`` factorizations of sparse, spatially banded
  matrices), without computing any singular value.

The derivation, the routes per unit kind and measured timings are in ``docs/spectra.md``.

Shapes: an operator ``J`` maps maps of ``in_shape`` to ``out_shape``; its matrix is
``(n_out, n_in)``. A spectrum has ``min(n_out, n_in)`` values, in descending order. Vectors are
columns: ``U`` is ``(n_out, k)``, ``V`` is ``(n_in, k)``, with ``J V = U diag(values)``.
"""

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
