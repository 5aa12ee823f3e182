"""Linear algebra below the spectra: result objects, thread control, LAPACK eigensolvers called
in place, dense SVDs in LAPACK's fast orientation, inertia counting by block LDL^T, the block
Krylov solver and SciPy's ``svds``.

Matrix-free estimators (operators too large to form):

Matrix-free spectral estimators with confidence intervals, for operators too large to form.

* :func:`lanczos`: ``B`` independent Lanczos recurrences on ``J^T J`` (or ``J J^T``), batched
  (one ``J`` and one ``J^T`` product on ``B`` vectors per step), with ``"none"``,
  ``"selective"`` or ``"full"`` reorthogonalization.
* :func:`slq`: stochastic Lanczos quadrature of the singular-value density (Gauss nodes and
  weights per probe, histogram, smoothed density, moments).
* :func:`estimate_bands`: counts of singular values above / inside / below the plateau band
  and at zero, with confidence intervals that include rigorous Gauss-Radau quadrature bounds.
* :func:`exact_parts`: structural zeros and exactly-``|alpha|`` values known without
  estimation.

Exact (dense or structured) counterparts live in :mod:`linstab.spectra` (``spectrum``,
``bands``); top-k singular triplets there compose with these estimators (``deflate=``,
``spectral_bound(topk=...)``).
"""

from .band_estimates import BandEstimate, BandInterval, band_estimate, estimate_bands, steps_rule
from .dense_svd import svd, svdvals
from .eigh import eigvalsh, load_2stage, load_mkl_syevd, openblas_threads
from .exact_parts import ExactParts, exact_parts
from .inertia import block_inertia, block_is_pd, ldl_inertia, partition
from .krylov import block_krylov, row_products
from .lanczos import REORTH, SIDES, LanczosResult, gram_operator, lanczos
from .quadrature import distribution_bounds, gauss_quadrature, largest_ritz, radau_bounds
from .results import (
    BANDS,
    METHODS,
    PLATEAU,
    ROUTES,
    SOLVERS,
    ZERO_TOL,
    BandCounts,
    ConvergenceWarning,
    SpectrumResult,
    check_dtype,
    check_k,
    check_op,
)
from .slq import (
    DEFAULT_PROBES,
    DEFAULT_RESOLUTION,
    AccuracyWarning,
    SLQResult,
    choose_parameters,
    rademacher_probes,
    slq,
    spectral_bound,
)
from .svds import scipy_svds
from .threads import blas_threads, torch_threads

__all__ = [
    "svd",
    "svdvals",
    "lanczos",
    "LanczosResult",
    "gram_operator",
    "REORTH",
    "SIDES",
    "gauss_quadrature",
    "radau_bounds",
    "distribution_bounds",
    "largest_ritz",
    "slq",
    "SLQResult",
    "rademacher_probes",
    "spectral_bound",
    "choose_parameters",
    "DEFAULT_PROBES",
    "DEFAULT_RESOLUTION",
    "AccuracyWarning",
    "estimate_bands",
    "steps_rule",
    "band_estimate",
    "BandEstimate",
    "BandInterval",
    "BANDS",
    "PLATEAU",
    "exact_parts",
    "ExactParts",
    "BandCounts",
    "ConvergenceWarning",
    "METHODS",
    "ROUTES",
    "SOLVERS",
    "ZERO_TOL",
    "SpectrumResult",
    "blas_threads",
    "block_inertia",
    "block_is_pd",
    "block_krylov",
    "check_dtype",
    "check_k",
    "check_op",
    "eigvalsh",
    "ldl_inertia",
    "load_2stage",
    "load_mkl_syevd",
    "openblas_threads",
    "partition",
    "row_products",
    "scipy_svds",
    "torch_threads",
]
