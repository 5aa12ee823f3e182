"""Linear algebra below the spectra: result objects, thread control, LAPACK eigensolvers called
in place, inertia counting by block LDL^T, the block Krylov solver and SciPy's ``svds``.
"""

from .eigh import eigvalsh, load_2stage, load_mkl_syevd, openblas_threads
from .inertia import block_inertia, block_is_pd, ldl_inertia, partition
from .krylov import block_krylov, row_products
from .results import (
    METHODS,
    ROUTES,
    SOLVERS,
    BandCounts,
    ConvergenceWarning,
    SpectrumResult,
    check_dtype,
    check_k,
    check_op,
)
from .svds import scipy_svds
from .threads import blas_threads, torch_threads

__all__ = [
    "BandCounts",
    "ConvergenceWarning",
    "METHODS",
    "ROUTES",
    "SOLVERS",
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
