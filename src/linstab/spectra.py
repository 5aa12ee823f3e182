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

from __future__ import annotations

import argparse
import csv
import ctypes
import glob
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .operators import LinearOperator, UnitJacobian

__all__ = [
    "SpectrumResult",
    "BandCounts",
    "ConvergenceWarning",
    "spectrum",
    "bands",
    "unit_bands",
    "scree_data",
    "unit_factors",
    "UnitFactors",
    "FactorOperator",
    "factor_operator",
    "METHODS",
    "SOLVERS",
    "ROUTES",
    "add_parser",
    "add_figure_parser",
]

METHODS = ("exact", "topk", "bottomk")
SOLVERS = ("auto", "block-krylov", "arpack", "propack", "lobpcg")
ROUTES = ("auto", "structured", "gram", "dense")
_DTYPES = (torch.float32, torch.float64)


class ConvergenceWarning(RuntimeWarning):
    """An iterative singular-value solver stopped before meeting its tolerance."""


# ============================================================================================
# Result objects
# ============================================================================================
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class SpectrumResult:
    """Singular values (and optionally vectors) of an operator ``J`` (``n_out x n_in``).

    Attributes:
        values: singular values, descending, ``(k,)`` (``k = min(n_out, n_in)`` for ``"exact"``).
        U: left singular vectors as columns ``(n_out, k)``, or ``None``.
        V: right singular vectors as columns ``(n_in, k)``, or ``None``.
        method: the requested method, ``"exact"``, ``"topk"`` or ``"bottomk"``.
        route: how it was computed: ``"structured"``, ``"gram"``, ``"dense-gram"``,
            ``"dense-svd"``, ``"block-krylov"``, ``"arpack"``, ``"propack"`` or ``"lobpcg"``.
        dtype: dtype of ``values`` (and of the dense linear algebra).
        converged: ``True`` for direct methods; for iterative ones whether every requested
            triplet met the tolerance.
        iterations: restarts (block Krylov) or 0 (direct methods; SciPy does not report them).
        residuals: ``sqrt(|J v - s u|^2 + |J^T u - s v|^2)`` per triplet, ``(k,)``, or ``None``.
        timings: seconds per phase (``"total"`` always present).
        n_exact_ones: number of singular values that equal ``|alpha|`` exactly by the unit's
            structure (``alpha = 1`` for standard units: the plateau); ``None`` when the route
            does not expose the structure.
        n_zero_structural: number of singular values that are 0 because outputs are inactive
            (outer ReLU mask); ``None`` when unknown.
        alpha: the skip-connection scale of a structured unit (the plateau value), else ``None``.
        shape: ``(n_out, n_in)`` of the operator.
        tol: residual tolerance of an iterative method (relative to the largest value).
        info: further details (sizes of the reduction, product counts, warnings).
    """

    values: torch.Tensor
    U: torch.Tensor | None = None
    V: torch.Tensor | None = None
    method: str = "exact"
    route: str = ""
    dtype: torch.dtype = torch.float64
    converged: bool = True
    iterations: int = 0
    residuals: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    n_exact_ones: int | None = None
    n_zero_structural: int | None = None
    alpha: float | None = None
    shape: tuple[int, int] = (0, 0)
    tol: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of singular values held."""
        return int(self.values.numel())

    def metadata(self) -> dict:
        """Everything but the arrays, JSON-serializable."""
        return {
            "method": self.method,
            "route": self.route,
            "dtype": _dtype_name(self.dtype),
            "converged": bool(self.converged),
            "iterations": int(self.iterations),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "n_exact_ones": self.n_exact_ones,
            "n_zero_structural": self.n_zero_structural,
            "alpha": self.alpha,
            "shape": list(self.shape),
            "tol": self.tol,
            "k": self.k,
            "info": _jsonable(self.info),
        }

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``.npz`` with arrays ``singular_values`` (and ``u``, ``v``, ``residuals`` when
        present) and ``metadata`` (a JSON string; ``extra`` is merged into it).

        Returns:
            the written path (``.npz`` appended when missing).
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        if extra:
            meta.update(_jsonable(extra))
        arrays = {"singular_values": self.values.detach().cpu().numpy()}
        if self.U is not None:
            arrays["u"] = self.U.detach().cpu().numpy()
        if self.V is not None:
            arrays["v"] = self.V.detach().cpu().numpy()
        if self.residuals is not None:
            arrays["residuals"] = self.residuals.detach().cpu().numpy()
        arrays["metadata"] = np.array(json.dumps(meta))
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpectrumResult:
        """Read a file written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["metadata"]))
            values = torch.from_numpy(z["singular_values"].copy())
            U = torch.from_numpy(z["u"].copy()) if "u" in z else None
            V = torch.from_numpy(z["v"].copy()) if "v" in z else None
            res = torch.from_numpy(z["residuals"].copy()) if "residuals" in z else None
        return cls(
            values=values,
            U=U,
            V=V,
            method=meta.get("method", "exact"),
            route=meta.get("route", ""),
            dtype=values.dtype,
            converged=bool(meta.get("converged", True)),
            iterations=int(meta.get("iterations", 0)),
            residuals=res,
            timings=dict(meta.get("timings", {})),
            n_exact_ones=meta.get("n_exact_ones"),
            n_zero_structural=meta.get("n_zero_structural"),
            alpha=meta.get("alpha"),
            shape=tuple(meta.get("shape", (0, 0))),
            tol=meta.get("tol"),
            info={k: v for k, v in meta.items() if k not in _META_KEYS} | dict(meta.get("info", {})),
        )

    def __repr__(self) -> str:
        head = ", ".join(f"{float(v):.4g}" for v in self.values[:3])
        return (
            f"SpectrumResult(k={self.k}, shape={self.shape}, method={self.method!r}, "
            f"route={self.route!r}, values=[{head}{', ...' if self.k > 3 else ''}], "
            f"converged={self.converged}, n_exact_ones={self.n_exact_ones})"
        )


_META_KEYS = {
    "method", "route", "dtype", "converged", "iterations", "timings", "n_exact_ones",
    "n_zero_structural", "alpha", "shape", "tol", "k", "info",
}


@dataclass
class BandCounts:
    """Counts of singular values in the paper's bands (Figure 2).

    With thresholds ``(lo, hi)`` and ``zero_tol``: ``above`` counts ``s > hi``, ``plateau``
    ``lo <= s <= hi``, ``below`` ``zero_tol < s < lo`` and ``zero`` ``s <= zero_tol``; they sum
    to ``n = min(n_out, n_in)``.

    Attributes:
        n: number of singular values.
        thresholds: ``(lo, hi)``.
        zero_tol: values at or below it count as zero.
        above, plateau, below, zero: the counts.
        n_exact_ones: singular values exactly equal to ``|alpha|`` by structure (``None`` when
            the route does not expose it); they are part of ``plateau`` when ``lo <= |alpha| <= hi``.
        alpha: the plateau value of a structured unit, else ``None``.
        route: ``"inertia-structured"``, ``"inertia-gram"`` or ``"spectrum-<route>"``.
        timings: seconds per phase.
    """

    n: int
    thresholds: tuple[float, float]
    zero_tol: float
    above: int
    plateau: int
    below: int
    zero: int
    n_exact_ones: int | None = None
    alpha: float | None = None
    route: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {"above": self.above, "plateau": self.plateau, "below": self.below, "zero": self.zero}

    @property
    def fractions(self) -> dict[str, float]:
        n = max(self.n, 1)
        out = {k: v / n for k, v in self.counts.items()}
        if self.n_exact_ones is not None:
            out["exact_ones"] = self.n_exact_ones / n
        return out

    def to_dict(self) -> dict:
        d = {
            "n": self.n,
            "thresholds": list(self.thresholds),
            "zero_tol": self.zero_tol,
            **self.counts,
            "n_exact_ones": self.n_exact_ones,
            "alpha": self.alpha,
            "route": self.route,
            "timings": dict(self.timings),
        }
        d["fractions"] = self.fractions
        return d


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.dtype):
        return _dtype_name(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


# ============================================================================================
# Input checks
# ============================================================================================
def _check_op(op) -> None:
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"expected a linstab LinearOperator (e.g. lin.unit(1, 5)), got {type(op).__name__}"
        )


def _check_dtype(dtype) -> None:
    if dtype is not None and dtype not in _DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64 (or None), got {dtype!r}")


def _check_k(k, n: int, method: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be a positive int for method={method!r}, got {type(k).__name__} {k!r}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (= min(n_out, n_in)) for method={method!r}, got {k}")
    return k


# ============================================================================================
# Fast symmetric eigenvalues (LAPACK 2-stage tridiagonalization when available)
# ============================================================================================
_LAPACK_2STAGE: dict = {}
_SELF_TEST = ((torch.float64, np.float64, 1e-10), (torch.float32, np.float32, 1e-3))  # dtype, tol


def _eig_self_test(solve, npt, tol: float) -> bool:
    """Whether ``solve`` (values of a symmetric C-order ``npt`` matrix it may destroy, or
    ``None`` on failure) gets a seeded random 40 x 40 matrix right to ``40 tol``."""
    a = np.random.default_rng(0).standard_normal((40, 40))
    a = a + a.T
    w = solve(np.array(a, dtype=npt, order="C"))
    return w is not None and bool(np.abs(np.sort(w) - np.linalg.eigvalsh(a)).max() <= tol * 40)


def _load_2stage():
    """SciPy's bundled OpenBLAS: its thread control and ``LAPACKE_?syev_2stage``, self-tested.

    Returns a dict with ``"threads"`` (``(get, set)`` functions) when found, plus
    ``torch.float64``/``torch.float32`` entries (the 2-stage values-only eigensolvers) when they
    exist and pass a self-test; ``None`` off x86-64 Linux or when SciPy's OpenBLAS is not found.
    """
    if "fns" in _LAPACK_2STAGE:
        return _LAPACK_2STAGE["fns"]
    fns = None
    try:
        if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
            raise OSError("unsupported platform")
        import scipy

        base = Path(scipy.__file__).resolve().parent
        libs = sorted(glob.glob(str(base.parent / "scipy.libs" / "libscipy_openblas*.so*")))
        for path in libs:
            lib = ctypes.CDLL(path)
            found = {}
            for prefix in ("scipy_openblas", "openblas"):
                get = getattr(lib, f"{prefix}_get_num_threads", None)
                put = getattr(lib, f"{prefix}_set_num_threads", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    found["threads"] = (get, put)
                    break
            for ch, ctype in (("d", torch.float64), ("s", torch.float32)):
                for name in (f"scipy_LAPACKE_{ch}syev_2stage", f"LAPACKE_{ch}syev_2stage"):
                    fn = getattr(lib, name, None)
                    if fn is not None:
                        fn.restype = ctypes.c_int
                        fn.argtypes = [
                            ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_int64,
                            ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                        ]
                        found[ctype] = fn
                        break
            if found:
                fns = found
                break
        if fns is not None:  # keep the eigensolvers only if both exist and pass the self-test

            def lapacke(fn):
                def solve(b: np.ndarray) -> np.ndarray | None:
                    w = np.empty(b.shape[0], dtype=b.dtype)
                    info = fn(102, b"N", b"L", b.shape[0], b.ctypes.data, b.shape[0], w.ctypes.data)
                    return w if info == 0 else None

                return solve

            ok = all(c in fns and _eig_self_test(lapacke(fns[c]), npt, tol) for c, npt, tol in _SELF_TEST)
            if not ok:
                fns.pop(torch.float64, None)
                fns.pop(torch.float32, None)
    except Exception:  # noqa: BLE001 - any problem: torch's eigvalsh, OpenBLAS threads untouched
        fns = None
    _LAPACK_2STAGE["fns"] = fns
    return fns


def _blas_threads() -> int:
    """Threads for linstab's dense kernels: ``$LINSTAB_BLAS_THREADS``, else torch's setting."""
    env = os.environ.get("LINSTAB_BLAS_THREADS")
    return int(env) if env and env.isdigit() and int(env) > 0 else torch.get_num_threads()


class _openblas_threads:  # noqa: N801 - used like a function
    """Context manager: run the OpenBLAS bundled with SciPy with ``n`` threads, then restore.

    ``n=None`` (the default) follows :func:`_blas_threads`: torch's thread count, so that
    ``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) makes every dense kernel of linstab
    single-threaded, which is what a machine shared with other processes needs (there, OpenBLAS
    threads spinning against other work ran 2-10x slower than one thread).
    """

    def __init__(self, n: int | None = None) -> None:
        self.n = _blas_threads() if n is None else n
        self.old = None

    def __enter__(self):
        fns = _load_2stage()
        self.ctl = fns.get("threads") if fns else None
        if self.ctl is not None:
            self.old = self.ctl[0]()
            self.ctl[1](self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            self.ctl[1](self.old)
        return False


_MKL_SYEVD: dict = {}


def _load_mkl_syevd():
    """MKL's Fortran ``?syevd`` exported by torch's CPU library, self-tested; ``None`` if absent.

    Lets :func:`_eigvalsh` work in place on a matrix the caller no longer needs instead of
    ``torch.linalg.eigvalsh``'s copy (same routine: the copy of an 8022 x 8022 float64 core is
    515 MB of fresh memory, 0.2 s warm and about 1.2 s when the pages are first touched on the
    benchmark machine). Integers are passed in zeroed 8-byte cells, which read the same as 4- or
    8-byte Fortran integers.
    """
    if "fns" in _MKL_SYEVD:
        return _MKL_SYEVD["fns"]
    fns = None
    try:
        if not (sys.platform.startswith("linux") and torch.backends.mkl.is_available()):
            raise OSError("no MKL in torch")
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        found = {}
        for ch, ctype in (("d", torch.float64), ("s", torch.float32)):
            fn = getattr(lib, f"{ch}syevd_", None)
            if fn is not None:
                fn.restype = None
                found[ctype] = fn
        for ctype, npt, tol in _SELF_TEST:
            if ctype in found:
                fn = found[ctype]
                if not _eig_self_test(lambda b, fn=fn: _syevd_inplace(fn, b, "L"), npt, tol):
                    found.pop(ctype)
        fns = found or None
    except Exception:  # noqa: BLE001 - any problem: torch.linalg.eigvalsh
        fns = None
    _MKL_SYEVD["fns"] = fns
    return fns


def _syevd_inplace(fn, a: np.ndarray, uplo: str) -> np.ndarray | None:
    """Eigenvalues (ascending) by LAPACK ``?syevd`` (values only) on the column-major ``a``,
    which is destroyed; ``None`` if LAPACK reports an error."""
    n = a.shape[0]
    ints = np.zeros(5, dtype=np.int64)  # n, lda, lwork, liwork, info
    ints[:2] = n
    w = np.empty(n, dtype=a.dtype)
    q = np.zeros(2, dtype=a.dtype)
    iq = np.zeros(2, dtype=np.int64)
    p = ints.ctypes.data
    cells = [ctypes.c_void_p(p + 8 * i) for i in range(5)]
    jobz, ul = ctypes.c_char(b"N"), ctypes.c_char(uplo.encode())

    def call(work, iwork):
        ptr = [ctypes.c_void_p(x.ctypes.data) for x in (a, w, work, iwork)]
        fn(ctypes.byref(jobz), ctypes.byref(ul), cells[0], ptr[0], cells[1], ptr[1], ptr[2], cells[2],
           ptr[3], cells[3], cells[4])  # fmt: skip

    ints[2:4] = -1  # workspace query; all bits set: -1 in either integer width
    call(q, iq)
    if ints[4] != 0:
        return None
    lwork, liwork = int(q[0]), int(iq[0] & 0xFFFFFFFF)
    ints[2], ints[3], ints[4] = lwork, liwork, 0
    call(np.empty(max(lwork, 1), dtype=a.dtype), np.zeros(max(liwork, 1), dtype=np.int64))
    return w if ints[4] == 0 else None


def _eigvalsh(A: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Eigenvalues (ascending) of a symmetric matrix; the lower triangle is read.

    ``torch.linalg.eigvalsh`` (LAPACK ``syevd``; MKL in the x86 CPU wheels), with torch's
    threads; with ``overwrite=True`` the same MKL routine runs in place on ``A`` (no copy).
    ``LINSTAB_EIGVALSH=openblas-2stage`` selects SciPy's OpenBLAS ``syev_2stage`` instead
    (values only, BLAS-3 band reduction); on the 2-core machine of the benchmarks it was slower
    than MKL's ``syevd`` (8022 x 8022, float64, idle: 33.3 s / 21.8 s with 1 / 2 threads against
    28.3 s / 15.2 s; ``benchmarks/eigensolvers.py``).
    """
    n = A.shape[0]
    want = os.environ.get("LINSTAB_EIGVALSH", "").lower() == "openblas-2stage"
    fns = _load_2stage() if (want and A.device.type == "cpu" and n >= 64) else None
    if fns is not None and A.dtype in fns:
        a = A.detach().numpy() if (overwrite and A.is_contiguous()) else A.detach().clone().numpy()
        a = np.ascontiguousarray(a)
        w = np.empty(n, dtype=a.dtype)
        with _openblas_threads():
            # a C-order symmetric matrix read as column-major is itself; 'U' there = lower here
            info = fns[A.dtype](102, b"N", b"U", n, a.ctypes.data, n, w.ctypes.data)
        if info == 0:
            return torch.from_numpy(np.sort(w))
    if overwrite and A.device.type == "cpu" and n >= 64 and not A.requires_grad:
        mkl = _load_mkl_syevd()
        col = A.mT.is_contiguous()
        if mkl is not None and A.dtype in mkl and (col or A.is_contiguous()):
            # column-major A is read as is ('L' = its lower triangle); a row-major one is read as
            # its transpose, whose upper triangle ('U') is A's lower triangle
            w = _syevd_inplace(mkl[A.dtype], A.detach().numpy(), "L" if col else "U")
            if w is not None:
                return torch.from_numpy(w)
    return torch.linalg.eigvalsh(A)


# ============================================================================================
# Block LDL^T inertia of sparse, spatially banded symmetric matrices
# ============================================================================================
def _ldl_inertia(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int], float]:
    """Bunch-Kaufman ``LDL^T`` of a dense symmetric matrix.

    Returns:
        ``(LD, pivots, (pos, neg, zero), min_abs_d)``, where ``min_abs_d`` is the smallest
        modulus of an eigenvalue of ``D`` (a conditioning proxy).
    """
    LD, piv, _ = torch.linalg.ldl_factor_ex(S)  # info > 0: an exactly zero pivot (counted)
    n = S.shape[0]
    d = LD.diagonal().clone()
    p = piv.cpu().numpy()
    eig = d.clone()
    k = 0
    two = np.nonzero(p < 0)[0]
    if two.size:
        # 2x2 blocks start where p[k] == p[k+1] < 0 (LAPACK lower convention)
        starts = []
        while k < n:
            if p[k] < 0:
                starts.append(k)
                k += 2
            else:
                k += 1
        st = torch.as_tensor(starts, dtype=torch.long)
        a, c = d[st], d[st + 1]
        b = LD[st + 1, st]
        mean = (a + c) / 2
        rad = torch.sqrt(((a - c) / 2) ** 2 + b**2)
        eig[st] = mean + rad
        eig[st + 1] = mean - rad
    pos = int((eig > 0).sum())
    neg = int((eig < 0).sum())
    zero = n - pos - neg
    mind = float(eig.abs().min()) if n else math.inf
    return LD, piv, (pos, neg, zero), mind


def _partition(pattern: sp.csr_matrix, min_block: int) -> list[int]:
    """Block boundaries that make a symmetric pattern block tridiagonal.

    Greedy: each block is at least ``min_block`` long (except the last) and the next block
    reaches past the farthest column any row of the current block touches.
    """
    n = pattern.shape[0]
    if n == 0:
        return [0]
    pattern = (abs(pattern) + sp.identity(n, format="csr")).tocsr()  # no empty rows
    far = np.maximum.reduceat(pattern.indices, pattern.indptr[:-1])
    bounds = [0]
    s, e = 0, min(n, min_block)
    while e < n:
        reach = int(far[s:e].max()) + 1
        e2 = min(n, max(reach, e + min_block))
        bounds.append(e)
        s, e = e, e2
    bounds.append(n)
    return bounds


def _block_inertia(
    N: sp.csr_matrix, bounds: list[int], rcond: float = 1e-7, max_block: int = 3072
) -> tuple[int, int, int]:
    """Inertia ``(pos, neg, zero)`` of a symmetric block-tridiagonal sparse matrix.

    Block ``LDL^T`` by Haynsworth's inertia additivity: ``In(N) = In(S_1) + In(S_2) + ...`` with
    Schur complements ``S_{j+1} = N_{j+1,j+1} - N_{j+1,j} S_j^{-1} N_{j,j+1}``; each ``S_j`` is
    factored by Bunch-Kaufman ``LDL^T``. A pivot block whose ``D`` has an eigenvalue below
    ``rcond * |N|`` is merged with the next block instead of being inverted (so no
    ill-conditioned block is ever inverted); when a merged block would exceed ``max_block``, the
    whole remaining matrix is factored at once (one dense ``LDL^T``). Computed in float64.
    """
    n = N.shape[0]
    if n == 0:
        return 0, 0, 0
    scale = float(abs(N).sum(axis=1).max()) or 1.0
    nb = len(bounds) - 1
    pos = neg = zero = 0
    start, end, j = bounds[0], bounds[1], 1
    S = torch.from_numpy(N[start:end, start:end].toarray())
    while True:
        if end >= n:
            _, _, (p, q, z), _ = _ldl_inertia(S)
            return pos + p, neg + q, zero + z
        nxt = bounds[j + 1] if j + 1 <= nb else n
        _, _, (p, q, z), mind = _ldl_inertia(S)
        B = torch.from_numpy(N[start:end, end:nxt].toarray())
        C = torch.from_numpy(N[end:nxt, end:nxt].toarray())
        if mind < rcond * scale or z > 0:
            if S.shape[0] + (nxt - end) > max_block:  # finish with one dense factorization
                B = torch.from_numpy(N[start:end, end:n].toarray())
                C = torch.from_numpy(N[end:n, end:n].toarray())
                S = torch.cat([torch.cat([S, B], 1), torch.cat([B.T, C], 1)], 0)
                _, _, (p, q, z), _ = _ldl_inertia(S)
                return pos + p, neg + q, zero + z
            S = torch.cat([torch.cat([S, B], 1), torch.cat([B.T, C], 1)], 0)
            end, j = nxt, j + 1
            continue
        pos, neg, zero = pos + p, neg + q, zero + z
        X = torch.linalg.solve(S, B)  # LU solve: BLAS-3, unlike LAPACK's sytrs
        S = C - B.T @ X
        S = (S + S.T) / 2
        start, end, j = end, nxt, j + 1


def _block_is_pd(N: sp.csr_matrix, bounds: list[int], delta: float) -> bool:
    """Whether ``N - delta I`` is positive definite (block Cholesky of a block-tridiagonal
    sparse matrix; stable without pivoting for definite matrices)."""
    n = N.shape[0]
    start, end, j = bounds[0], bounds[1], 1
    S = torch.from_numpy(N[start:end, start:end].toarray())
    while True:
        S = S - delta * torch.eye(S.shape[0], dtype=S.dtype)
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0:
            return False
        if end >= n:
            return True
        nxt = bounds[j + 1] if j + 1 < len(bounds) else n
        B = torch.from_numpy(N[start:end, end:nxt].toarray())
        X = torch.linalg.solve_triangular(L, B, upper=False)
        S = torch.from_numpy(N[end:nxt, end:nxt].toarray()) - X.T @ X
        S = (S + S.T) / 2
        start, end, j = end, nxt, j + 1


# ============================================================================================
# Sparse factors of a unit Jacobian: J = D_out (alpha S + U W)
# ============================================================================================
def _blk_conv(blk, V: torch.Tensor) -> torch.Tensor:
    """``B C V`` in ``V``'s dtype (the block's cached pieces cast)."""
    w = blk.weight.to(V.dtype)
    y = F.conv2d(V, w, None, blk.stride, blk.padding, blk.dilation, blk.groups)
    return y * blk.scale.to(V.dtype).view(1, -1, 1, 1)


def _blk_conv_t(blk, W: torch.Tensor) -> torch.Tensor:
    """``C^T B W`` in ``W``'s dtype."""
    W = W * blk.scale.to(W.dtype).view(1, -1, 1, 1)
    k = blk.weight.shape[-2:]
    out_pad = tuple(
        blk.in_hw[i]
        - ((blk.out_hw[i] - 1) * blk.stride[i] - 2 * blk.padding[i] + blk.dilation[i] * (k[i] - 1) + 1)
        for i in range(2)
    )
    return F.conv_transpose2d(
        W, blk.weight.to(W.dtype), None, blk.stride, blk.padding, out_pad, blk.groups, blk.dilation
    )


def _is_mask(d: torch.Tensor | None) -> bool:
    return d is not None and bool(((d == 0) | (d == 1)).all())


def _unit_products(op: UnitJacobian, dtype: torch.dtype):
    """Batched ``J V`` and ``J^T W`` of a unit Jacobian computed in ``dtype``."""

    def cast(t):
        return None if t is None else t.to(dtype)

    derivs = [cast(b.deriv) for b in op.blocks]
    out_d = cast(op.out_deriv)
    alpha = op.alpha

    def skip(V):
        if op.shortcut_kind == "conv-bn":
            return _blk_conv(op.shortcut, V)
        return op.skip(V)

    def skip_t(W):
        if op.shortcut_kind == "conv-bn":
            return _blk_conv_t(op.shortcut, W)
        return op.skip_t(W)

    def mv(V):
        y = V
        for blk, d in zip(op.blocks, derivs, strict=True):
            y = _blk_conv(blk, y)
            if d is not None:
                y = y * d
        y = y + alpha * skip(V)
        return y if out_d is None else y * out_d

    def rmv(W):
        if out_d is not None:
            W = W * out_d
        y = W
        for blk, d in zip(reversed(op.blocks), reversed(derivs), strict=True):
            if d is not None:
                y = y * d
            y = _blk_conv_t(blk, y)
        return y + alpha * skip_t(W)

    return mv, rmv


def _conv_columns(blk, idx: np.ndarray, transpose: bool) -> sp.csc_matrix:
    """Columns ``B C e_t`` (or ``C^T B e_t`` when ``transpose``) of one conv + BN, in float64,
    from the kernel by index arithmetic (no convolution is run).

    Args:
        blk: a :class:`~linstab.operators.ConvBNLinearization`.
        idx: flat indices ``t`` into the conv's input (or, transposed, output) map.
        transpose: build columns of ``C^T B`` instead of ``B C``.

    Returns:
        sparse ``(n_out_side, len(idx))`` matrix.
    """
    w = blk.weight.detach().to(torch.float64).cpu().numpy()
    sc = blk.scale.detach().to(torch.float64).cpu().numpy()
    co_n, cig, kh_n, kw_n = w.shape
    g = blk.groups
    ci_n, cog = cig * g, co_n // g
    (sh, sw), (ph, pw), (dh, dw) = blk.stride, blk.padding, blk.dilation
    hin, win = blk.in_hw
    hout, wout = blk.out_hw
    idx = np.asarray(idx, dtype=np.int64)
    rows, cols, vals = [], [], []
    if not transpose:
        ci, h, x = np.unravel_index(idx, (ci_n, hin, win))
        grp, cil = ci // cig, ci % cig
        for kh in range(kh_n):
            for kw in range(kw_n):
                nh, nw = h + ph - kh * dh, x + pw - kw * dw
                i, j = nh // sh, nw // sw
                ok = (nh % sh == 0) & (nw % sw == 0) & (i >= 0) & (i < hout) & (j >= 0) & (j < wout)
                sel = np.nonzero(ok)[0]
                co = grp[sel, None] * cog + np.arange(cog)[None, :]
                vals.append((w[co, cil[sel, None], kh, kw] * sc[co]).ravel())
                rows.append(((co * hout + i[sel, None]) * wout + j[sel, None]).ravel())
                cols.append(np.broadcast_to(sel[:, None], co.shape).ravel())
        shape = (co_n * hout * wout, idx.size)
    else:
        co, i, j = np.unravel_index(idx, (co_n, hout, wout))
        grp = co // cog
        for kh in range(kh_n):
            for kw in range(kw_n):
                h, x = i * sh + kh * dh - ph, j * sw + kw * dw - pw
                ok = (h >= 0) & (h < hin) & (x >= 0) & (x < win)
                sel = np.nonzero(ok)[0]
                ci = grp[sel, None] * cig + np.arange(cig)[None, :]
                vals.append((w[co[sel, None], np.arange(cig)[None, :], kh, kw] * sc[co[sel, None]]).ravel())
                rows.append(((ci * hin + h[sel, None]) * win + x[sel, None]).ravel())
                cols.append(np.broadcast_to(sel[:, None], ci.shape).ravel())
        shape = (ci_n * hin * win, idx.size)
    M = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape
    )
    M.eliminate_zeros()
    return M


def _impulse_columns(fn, idx: np.ndarray, shape_in: tuple[int, ...], n_out: int) -> sp.csc_matrix:
    """Columns ``fn(e_t)`` for ``t`` in ``idx`` by batched impulses in float64 (exact zeros kept)."""
    n_in = int(np.prod(shape_in))
    idx = np.asarray(idx, dtype=np.int64)
    bs = max(1, min(512, (1 << 22) // max(n_in, n_out)))
    rows, cols, vals = [], [], []
    for s in range(0, idx.size, bs):
        e = torch.as_tensor(idx[s : s + bs])
        E = torch.zeros((e.numel(), n_in), dtype=torch.float64)
        E[torch.arange(e.numel()), e] = 1
        Y = fn(E.reshape(e.numel(), *shape_in)).reshape(e.numel(), -1)
        nz = torch.nonzero(Y, as_tuple=True)
        rows.append(nz[1].numpy())
        cols.append(nz[0].numpy() + s)
        vals.append(Y[nz].numpy())
    if not rows:
        return sp.csc_matrix((n_out, 0))
    return sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, idx.size)
    )


def _grid_keys(shape: tuple[int, ...], out_hw: tuple[int, int]) -> np.ndarray:
    """Row-major spatial position on the ``out_hw`` grid of every entry of a ``(C, H, W)`` map."""
    c, h, w = shape
    hh = (np.arange(h) * out_hw[0]) // h
    ww = (np.arange(w) * out_hw[1]) // w
    key = hh[:, None] * out_hw[1] + ww[None, :]
    return np.broadcast_to(key[None], (c, h, w)).reshape(-1)


@dataclass
class UnitFactors:
    """Sparse factors of a unit Jacobian ``J = D_out (alpha S + U W)`` (float64).

    ``U = (tail of the body) E_T`` and ``W = E_T^T (head of the body)`` split the residual
    branch at the masked inner layer ``layer`` with the fewest active units ``T``.

    Attributes:
        layer: 0-based index of the body block whose ReLU mask is factored through.
        alpha: skip scale.
        shortcut: ``"identity"``, ``"subsample-pad"`` or ``"conv-bn"``.
        out_active: active output indices ``S`` (``m`` of them), sorted.
        inner_active: active inner indices ``T`` (``r`` of them).
        U: ``(n_out, r)`` sparse.
        Wt: ``W^T``, ``(n_in, r)`` sparse.
        skip: the shortcut matrix ``(n_out, n_in)`` (``None`` for the identity).
        out_keys: spatial order key of each output, ``(n_out,)``.
        inner_keys: spatial order key of each active inner unit, ``(r,)``.
        n_out, n_in: operator shape.
        seconds: build time.
    """

    layer: int
    alpha: float
    shortcut: str
    out_active: np.ndarray
    inner_active: np.ndarray
    U: sp.csc_matrix
    Wt: sp.csc_matrix
    skip: sp.csr_matrix | None
    out_keys: np.ndarray
    inner_keys: np.ndarray
    n_out: int
    n_in: int
    seconds: float = 0.0

    @property
    def m(self) -> int:
        return int(self.out_active.size)

    @property
    def r(self) -> int:
        return int(self.inner_active.size)


def _factor_plan(op: LinearOperator) -> tuple[int | None, str]:
    """The inner layer to factor through, or ``None`` and the reason there is none."""
    if not isinstance(op, UnitJacobian):
        return None, f"{type(op).__name__} is not a closed-form unit Jacobian"
    if op.out_deriv is not None and not _is_mask(op.out_deriv):
        return None, "the outer activation derivative is not a 0/1 mask (non-ReLU activation)"
    best, best_r = None, None
    for i, blk in enumerate(op.blocks):
        if _is_mask(blk.deriv):
            r = int(blk.deriv.sum())
            if best_r is None or r < best_r:
                best, best_r = i, r
    if best is None:
        return None, "no inner layer has a 0/1 (ReLU) mask"
    return best, ""


def unit_factors(op: LinearOperator) -> UnitFactors | None:
    """Sparse factors ``J = D_out (alpha S + U W)`` of a closed-form unit Jacobian.

    Returns ``None`` when the unit has no factorization (not a :class:`UnitJacobian`, a
    non-ReLU outer activation, or no inner 0/1 mask). Single conv + BN pieces are built from
    the kernel directly, longer chains (Bottleneck units) from batched impulses.
    """
    layer, _ = _factor_plan(op)
    if layer is None:
        return None
    t0 = time.perf_counter()
    blocks = op.blocks
    n_out, n_in = op.shape
    inner = blocks[layer]
    inner_shape = tuple(inner.preactivation.shape)
    T = torch.nonzero(inner.deriv.reshape(-1)).flatten().cpu().numpy()
    if op.out_deriv is None:
        S = np.arange(n_out)
    else:
        S = torch.nonzero(op.out_deriv.reshape(-1)).flatten().cpu().numpy()
    tail = blocks[layer + 1 :]
    if len(tail) == 1 and tail[0].deriv is None:
        U = _conv_columns(tail[0], T, transpose=False)
    else:
        derivs = [None if b.deriv is None else b.deriv.to(torch.float64) for b in tail]

        def tail_fn(V):
            for blk, d in zip(tail, derivs, strict=True):
                V = _blk_conv(blk, V)
                if d is not None:
                    V = V * d
            return V

        U = _impulse_columns(tail_fn, T, inner_shape, n_out)
    if layer == 0:
        Wt = _conv_columns(blocks[0], T, transpose=True)
    else:
        head = blocks[: layer + 1]
        hderivs = [None if b.deriv is None else b.deriv.to(torch.float64) for b in head]

        def head_t(Y):
            for i in range(layer, -1, -1):
                if i < layer and hderivs[i] is not None:
                    Y = Y * hderivs[i]
                Y = _blk_conv_t(head[i], Y)
            return Y

        Wt = _impulse_columns(head_t, T, inner_shape, n_in)
    skip = None
    if op.shortcut_kind == "subsample-pad":
        scm = op.shortcut
        c_in, h_in, w_in = op.in_shape
        c_out, h_out, w_out = op.out_shape
        c, i, j = np.meshgrid(np.arange(c_in), np.arange(h_out), np.arange(w_out), indexing="ij")
        src = (c * h_in + i * scm.stride) * w_in + j * scm.stride
        dst = ((c + scm.pad_front) * h_out + i) * w_out + j
        skip = sp.csr_matrix((np.ones(src.size), (dst.ravel(), src.ravel())), shape=(n_out, n_in))
    elif op.shortcut_kind == "conv-bn":
        skip = _conv_columns(op.shortcut, np.arange(n_in), transpose=False).tocsr()
    out_hw = tuple(op.out_shape[-2:])
    return UnitFactors(
        layer=layer,
        alpha=float(op.alpha),
        shortcut=op.shortcut_kind,
        out_active=S,
        inner_active=T,
        U=U.tocsc(),
        Wt=Wt.tocsc(),
        skip=skip,
        out_keys=_grid_keys(tuple(op.out_shape), out_hw),
        inner_keys=_grid_keys(inner_shape, out_hw)[T],
        n_out=n_out,
        n_in=n_in,
        seconds=time.perf_counter() - t0,
    )


class FactorOperator(LinearOperator):
    """A unit Jacobian applied through its sparse factors ``D_out (alpha S + U W)``.

    Same matrix as the unit's :class:`~linstab.operators.UnitJacobian` (to rounding), with
    products 2-4x cheaper than the convolutions: SciPy CSR products on the CPU, torch sparse CSR
    products on other devices. Used by the iterative solvers (``products="auto"``).

    Args:
        f: the factors (see :func:`unit_factors`).
        op: the unit operator they were built from (shapes, dtype, device).
    """

    def __init__(self, f: UnitFactors, op: LinearOperator) -> None:
        super().__init__(op.in_shape, op.out_shape, op.dtype, op.device)
        npd = np.float64 if op.dtype == torch.float64 else np.float32
        mask = np.zeros(f.n_out, dtype=npd)
        mask[f.out_active] = 1
        self.alpha = f.alpha
        mats = {
            "W": f.Wt.T.tocsr(), "Wt": f.Wt.tocsr(), "U": f.U.tocsr(), "Ut": f.U.T.tocsr(),
            "S": None if f.skip is None else f.skip.tocsr(),
            "St": None if f.skip is None else f.skip.T.tocsr(),
        }
        self._cpu = self.device.type == "cpu"
        if self._cpu:
            self._m = {k: (None if v is None else v.astype(npd)) for k, v in mats.items()}
            self._mask = mask[None, :]
        else:
            self._m = {
                k: (None if v is None else _torch_csr(v, op.dtype, self.device)) for k, v in mats.items()
            }
            self._mask = torch.from_numpy(mask).to(self.device)[:, None]

    def _fapply(self, X, fwd: bool):
        m = self._m
        if self._cpu:
            if fwd:
                Y = (m["U"] @ (m["W"] @ X.T)).T
                Y += self.alpha * (X if m["S"] is None else (m["S"] @ X.T).T)
                return Y * self._mask
            X = X * self._mask
            Y = (m["Wt"] @ (m["Ut"] @ X.T)).T
            return Y + self.alpha * (X if m["St"] is None else (m["St"] @ X.T).T)
        mm = torch.sparse.mm
        Xt = X.T
        if fwd:
            Y = mm(m["U"], mm(m["W"], Xt)) + self.alpha * (Xt if m["S"] is None else mm(m["S"], Xt))
            return (Y * self._mask).T
        Xt = Xt * self._mask
        Y = mm(m["Wt"], mm(m["Ut"], Xt)) + self.alpha * (Xt if m["St"] is None else mm(m["St"], Xt))
        return Y.T

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        b = V.shape[0]
        X = V.reshape(b, -1)
        if self._cpu:
            Y = self._fapply(X.detach().numpy(), True)
            return torch.from_numpy(np.ascontiguousarray(Y)).reshape(b, *self.out_shape)
        return self._fapply(X, True).contiguous().reshape(b, *self.out_shape)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        b = W.shape[0]
        X = W.reshape(b, -1)
        if self._cpu:
            Y = self._fapply(X.detach().numpy(), False)
            return torch.from_numpy(np.ascontiguousarray(Y)).reshape(b, *self.in_shape)
        return self._fapply(X, False).contiguous().reshape(b, *self.in_shape)


def _torch_csr(M: sp.spmatrix, dtype: torch.dtype, device) -> torch.Tensor:
    M = M.tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(np.int64)),
            torch.from_numpy(M.indices.astype(np.int64)),
            torch.from_numpy(M.data).to(dtype),
            size=M.shape,
        ).to(device)


def factor_operator(op: LinearOperator) -> LinearOperator | None:
    """The sparse-factor twin of a unit Jacobian, or of a composition of them (a stage or the
    network); ``None`` when some factor does not exist (see :func:`unit_factors`)."""
    from .operators import ComposedOperator

    if isinstance(op, ComposedOperator):
        parts = [factor_operator(o) for o in op.ops]
        if any(p is None for p in parts):
            return None
        return ComposedOperator(parts)
    f = unit_factors(op)
    return None if f is None else FactorOperator(f, op)


@dataclass
class _Reduced:
    """The identity-shortcut reduction: ``J_S J_S^T = alpha^2 I_m + Q M Q^T``."""

    m: int
    n: int
    r: int
    alpha: float
    G11: sp.csr_matrix  # U_S^T U_S
    G12: sp.csr_matrix  # U_S^T (W^T)_S
    G22: sp.csr_matrix  # (W^T)_S^T (W^T)_S
    A: sp.csr_matrix  # W W^T
    keys: np.ndarray  # spatial key per inner unit (r,)
    dropped: int  # inner units whose U_S column vanishes (they drop out entirely)
    seconds: float


def _reduce(f: UnitFactors) -> _Reduced:
    t0 = time.perf_counter()
    S = f.out_active
    US = f.U.tocsr()[S].tocsc()
    WtS = f.Wt.tocsr()[S].tocsc()
    keep = np.asarray(abs(US).sum(axis=0)).ravel() > 0
    US, WtS, Wt = US[:, keep], WtS[:, keep], f.Wt[:, keep]
    USt = US.T.tocsr()
    G11 = (USt @ US).tocsr()
    G12 = (USt @ WtS).tocsr()
    G22 = (WtS.T.tocsr() @ WtS).tocsr()
    A = (Wt.T.tocsr() @ Wt).tocsr()
    return _Reduced(
        m=f.m,
        n=f.n_out,
        r=int(keep.sum()),
        alpha=f.alpha,
        G11=G11,
        G12=G12,
        G22=G22,
        A=A,
        keys=f.inner_keys[keep],
        dropped=int((~keep).sum()),
        seconds=time.perf_counter() - t0,
    )


def _structured_ok(op: LinearOperator) -> tuple[bool, str]:
    layer, why = _factor_plan(op)
    if layer is None:
        return False, why
    if op.shortcut_kind != "identity" or op.in_shape != op.out_shape:
        return False, f"shortcut {op.shortcut_kind!r}: J_S J_S^T is not identity plus low rank"
    return True, ""


def _rank_tol(G: sp.csr_matrix) -> float:
    norm = float(abs(G).sum(axis=1).max()) if G.nnz else 0.0
    return max(G.shape[0], 1) * np.finfo(np.float64).eps * max(norm, 1e-300) * 10


# ============================================================================================
# Exact spectra
# ============================================================================================
def _structured_spectrum(op: UnitJacobian, dtype: torch.dtype) -> SpectrumResult:
    t0 = time.perf_counter()
    f = unit_factors(op)
    red = _reduce(f)
    m, n, r, alpha = red.m, red.n, red.r, red.alpha
    # Wt_S columns that vanish carry nothing (zero columns of Q): drop them from Q and M
    keepw = np.asarray(abs(red.G22).sum(axis=0)).ravel() > 0
    timings = {"factors": f.seconds, "reduce": red.seconds}
    info = {"r": r, "m": m, "n": n, "layer": f.layer + 1, "dropped_inner": red.dropped}
    if r == 0:
        vals = torch.cat([torch.full((m,), abs(alpha), dtype=dtype), torch.zeros(n - m, dtype=dtype)])
        timings["total"] = time.perf_counter() - t0
        return SpectrumResult(
            values=vals, method="exact", route="structured", dtype=dtype, timings=timings,
            n_exact_ones=m, n_zero_structural=n - m, alpha=alpha, shape=op.shape, info=info,
        )
    rw = int(keepw.sum())
    if r + rw >= m:
        # the reduction is no smaller than J_S J_S^T: use the m x m Gram built from the factors
        res = _gram_spectrum(op, dtype, f)
        res.timings["factors"] = f.seconds
        res.n_exact_ones = 0
        res.alpha = alpha
        res.info.update(info, note="2r >= m: no structural plateau; m x m Gram from sparse factors")
        return res
    K, band = _banded_core(red, keepw, dtype, timings)
    t3 = time.perf_counter()
    if K is not None:
        k = r + rw
        info["reduction"] = "cholesky"
        info["bandwidth"], info["block"] = band
    else:
        # Q is rank deficient: pivoted Cholesky of the Gram, K = L^T P^T M P L
        from scipy.linalg import lapack

        Gd, Md = (X.toarray() for X in _core_matrices(red, keepw))
        c, piv, rank, _ = lapack.dpstrf(Gd, tol=-1.0, lower=1)
        piv = piv - 1
        Lp = torch.from_numpy(np.tril(c)[:, :rank]).to(dtype)
        Mp = torch.from_numpy(Md[np.ix_(piv, piv)]).to(dtype)
        K = Lp.T @ (Mp @ Lp)
        K = (K + K.T) / 2
        k = int(rank)
        info["reduction"] = "pivoted-cholesky"
        timings["core"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    # K is symmetric: pass its column-major transpose (read in place by LAPACK; in torch's
    # fallback copied by a memcpy rather than a transposing copy)
    lam = _eigvalsh(K.mT, overwrite=True)
    del K
    t5 = time.perf_counter()
    timings["eig"] = t5 - t4
    extra = 0
    if info["reduction"] == "pivoted-cholesky" or alpha == 0:
        # a rank-deficient Q (or alpha = 0) can leave exact zeros in the core: more values
        # equal |alpha| exactly; count them with a rounding-level tolerance
        scale = max(float(lam.abs().max()) if lam.numel() else 0.0, alpha**2, 1.0)
        zero = lam.abs() <= 100 * math.sqrt(max(k, 1)) * torch.finfo(dtype).eps * scale
        extra = int(zero.sum())
        lam = torch.where(zero, torch.zeros_like(lam), lam)
    core = torch.sqrt(torch.clamp(alpha**2 + lam, min=0))
    vals = torch.cat(
        [core, torch.full((m - k,), abs(alpha), dtype=dtype), torch.zeros(n - m, dtype=dtype)]
    )
    vals = torch.sort(vals, descending=True).values
    info["core_size"] = k
    timings["total"] = time.perf_counter() - t0
    return SpectrumResult(
        values=vals, method="exact", route="structured", dtype=dtype, timings=timings,
        n_exact_ones=m - k + extra, n_zero_structural=n - m, alpha=alpha, shape=op.shape, info=info,
    )


def _core_matrices(red: _Reduced, keepw: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``G = Q^T Q`` and ``M = [[W W^T, alpha E], [alpha E^T, 0]]`` (sparse, ``k x k``), ``Q``
    without its vanishing ``(W^T)_S`` columns (``E``: the kept columns of the identity)."""
    G12k = red.G12[:, keepw]
    G = sp.bmat([[red.G11, G12k], [G12k.T, red.G22[keepw][:, keepw]]], format="csr")
    E = sp.identity(red.r, format="csr")[:, keepw]
    M = sp.bmat([[red.A, red.alpha * E], [red.alpha * E.T, None]], format="csr")
    return G, M


def _banded_core(
    red: _Reduced, keepw: np.ndarray, dtype: torch.dtype, timings: dict, min_block: int = 256
) -> tuple[torch.Tensor | None, tuple[int, int]]:
    """The core ``K = L^T M L`` (``k x k``, ``k = r + rw``) from a banded Cholesky ``G = L L^T``.

    ``G = Q^T Q`` and ``M`` couple only unknowns whose kernels overlap, so in spatial order
    (``red.keys``) both are banded, with bandwidths ``bw`` and ``bwm`` of a few image rows.
    ``L`` then has ``G``'s band (LAPACK ``pbtrf``, no fill outside it), and with blocks of size
    ``b >= max(bw, bwm)`` it is block lower bidiagonal and ``M`` block tridiagonal, so
    ``K`` is block pentadiagonal: ``M L`` costs one sparse product per block column and
    ``K_ij = L_ii^T (ML)_ij + L_{i+1,i}^T (ML)_{i+1,j}`` two dense products per nonzero block.
    The eigenvalues of ``K`` do not depend on the order of the unknowns, so ``K`` stays in
    spatial order.

    ``min_block`` is the smallest block size (large enough for efficient dense products; the
    tests use a small one to exercise many blocks).

    Returns:
        ``(K, (bw, b))`` with ``K`` dense and symmetric, or ``(None, (bw, b))`` when ``G`` is not
        numerically positive definite (rank-deficient ``Q``). ``timings`` gains ``gram``,
        ``cholesky`` and ``core`` (seconds).
    """
    from scipy.linalg import LinAlgError, cholesky_banded, get_blas_funcs

    t0 = time.perf_counter()
    npd = np.float64 if dtype == torch.float64 else np.float32
    G, M = _core_matrices(red, keepw)
    k = G.shape[0]
    perm = np.argsort(np.concatenate([red.keys, red.keys[keepw]]), kind="stable")
    Gp = G[perm][:, perm].tocoo()
    Mp = M[perm][:, perm].tocsc().astype(npd)
    lower = Gp.row >= Gp.col
    off, col = (Gp.row - Gp.col)[lower], Gp.col[lower]
    bw = int(off.max()) if off.size else 0
    mc = Mp.tocoo()
    bwm = int(np.abs(mc.row - mc.col).max()) if mc.nnz else 0
    b = max(min(max(bw, bwm, min_block), k), 1)
    ab = np.zeros((bw + 1, k), dtype=npd)  # LAPACK lower band storage: ab[i - j, j] = G[i, j]
    ab[off, col] = Gp.data[lower]
    del Gp
    t1 = time.perf_counter()
    timings["gram"] = t1 - t0
    try:
        with _openblas_threads():
            Lb = cholesky_banded(ab, lower=True, overwrite_ab=True, check_finite=False)
    except LinAlgError:
        timings["cholesky"] = time.perf_counter() - t1
        return None, (bw, b)
    t2 = time.perf_counter()
    timings["cholesky"] = t2 - t1
    nb = -(-k // b)
    lo = [i * b for i in range(nb + 1)]
    lo[-1] = k

    def l_col(j: int) -> np.ndarray:
        """Rows ``lo[j] : lo[j + 2]`` of block column ``j`` of ``L``, dense, C order."""
        c0, c1, r1 = lo[j], lo[j + 1], lo[min(j + 2, nb)]
        w = c1 - c0
        buf = np.zeros(max(w + bw + 1, r1 - c0) * w, dtype=npd)
        # entry (c + d, c) of a (., w) C-order array sits at d * w + c * (w + 1): write the band
        # rows Lb[d, c0 + c] along those diagonals through a strided view (no two coincide)
        diag = np.lib.stride_tricks.as_strided(
            buf, shape=(bw + 1, w), strides=(w * buf.itemsize, (w + 1) * buf.itemsize)
        )
        diag[...] = Lb[:, c0:c1]
        return buf.reshape(-1, w)[: r1 - c0]

    trmm = get_blas_funcs("trmm", (Lb,))
    K = torch.zeros((k, k), dtype=dtype)  # torch: blocked (fast) transposing copies into it
    Lt: dict[tuple[int, int], np.ndarray] = {}  # L_qi^T, Fortran order (views of C-order blocks)
    ML: dict[tuple[int, int], np.ndarray] = {}  # (M L)_qj, Fortran order
    with _openblas_threads():
        for j in range(nb):
            Lc = l_col(j)
            c0, c1, c2 = lo[j], lo[j + 1], lo[min(j + 2, nb)]
            Lt[(j, j)] = Lc[: c1 - c0].T  # upper triangular
            if j + 1 < nb:
                Lt[(j + 1, j)] = Lc[c1 - c0 :].T  # lower triangular (b >= bw), maybe not square
            r0, r1 = lo[max(j - 1, 0)], lo[min(j + 3, nb)]
            P = np.asarray(Mp[:, c0:c2].tocsr()[r0:r1] @ Lc)  # (M L) rows r0:r1, block column j
            for i in range(max(j - 1, 0), min(j + 3, nb)):
                ML[(i, j)] = np.asfortranarray(P[lo[i] - r0 : lo[i + 1] - r0])
            # block column j of K above and on the diagonal: K_ij = sum_q L_qi^T (M L)_qj
            for i in range(max(j - 2, 0), j + 1):
                acc = None
                for q in (i, i + 1):
                    if (q, i) not in Lt or (q, j) not in ML:
                        continue
                    a, x = Lt[(q, i)], ML[(q, j)]
                    if a.shape[0] == a.shape[1]:
                        t = trmm(1.0, a, x, lower=int(q != i))
                    else:
                        t = a @ x
                    acc = t if acc is None else acc + t
                if acc is None:
                    continue
                acc = torch.from_numpy(acc)
                if i == j:
                    acc = (acc + acc.T) / 2
                K[lo[i] : lo[i + 1], lo[j] : lo[j + 1]] = acc
                K[lo[j] : lo[j + 1], lo[i] : lo[i + 1]] = acc.T
            ML.clear()  # (M L) of block column j serves column j of K only
            Lt.pop((j - 2, j - 2), None)  # column j + 1 of K starts at block row j - 1
            Lt.pop((j - 1, j - 2), None)
    timings["core"] = time.perf_counter() - t2
    return K, (bw, b)


def _factors_js(f: UnitFactors) -> sp.csr_matrix:
    """The active rows ``J_S = E_S^T (alpha S + U W)`` as a sparse ``(m, n_in)`` matrix."""
    S = f.out_active
    US = f.U.tocsr()[S]
    JS = US @ f.Wt.T.tocsr()
    if f.skip is None:
        P = sp.csr_matrix((np.ones(S.size), (np.arange(S.size), S)), shape=(S.size, f.n_in))
    else:
        P = f.skip[S]
    return (JS + f.alpha * P).tocsr()


def _values_from_gram(lam: torch.Tensor, n_vals: int, dtype: torch.dtype) -> torch.Tensor:
    lam = torch.sort(lam, descending=True).values[:n_vals]
    s = torch.sqrt(torch.clamp(lam, min=0)).to(dtype)
    if s.numel() < n_vals:
        s = torch.cat([s, torch.zeros(n_vals - s.numel(), dtype=dtype)])
    return s


def _gram_spectrum(op: UnitJacobian, dtype: torch.dtype, f: UnitFactors | None = None) -> SpectrumResult:
    """All singular values from the ``m x m`` Gram of the active rows, built from sparse factors."""
    t0 = time.perf_counter()
    f = f or unit_factors(op)
    JS = _factors_js(f)
    t1 = time.perf_counter()
    n_out, n_in = op.shape
    n_vals = min(n_out, n_in)
    m = f.m
    if m <= n_in:
        G = (JS @ JS.T).toarray()
    else:
        G = (JS.T @ JS).toarray()
    t2 = time.perf_counter()
    lam = _eigvalsh(torch.from_numpy(G).to(dtype), overwrite=True)
    t3 = time.perf_counter()
    vals = _values_from_gram(lam, n_vals, dtype)
    return SpectrumResult(
        values=vals, method="exact", route="gram", dtype=dtype,
        timings={"factors": f.seconds, "rows": t1 - t0, "gram": t2 - t1, "eig": t3 - t2,
                 "total": time.perf_counter() - t0},
        n_zero_structural=max(0, n_vals - m), shape=op.shape, info={"m": m, "gram_size": G.shape[0]},
    )


def _active_rows(op: LinearOperator) -> np.ndarray | None:
    if isinstance(op, UnitJacobian) and _is_mask(op.out_deriv):
        return torch.nonzero(op.out_deriv.reshape(-1)).flatten().cpu().numpy()
    return None


def _dense_rows(op: LinearOperator, rows: np.ndarray | None, dtype: torch.dtype, progress: bool = False):
    """The matrix (or its rows ``rows``) as a dense tensor in ``dtype``."""
    if rows is None:
        return op.materialize(dtype=dtype, progress=progress)
    n_out, n_in = op.shape
    if isinstance(op, UnitJacobian) and dtype != op.dtype:
        _, rmv = _unit_products(op, dtype)
        cdtype = dtype
    else:
        rmv, cdtype = op._rmatmat, op.dtype
    out = torch.empty((rows.size, n_in), dtype=dtype)
    bs = max(1, min(256, (1 << 23) // max(n_in, n_out)))
    for s in range(0, rows.size, bs):
        e = torch.as_tensor(rows[s : s + bs])
        E = torch.zeros((e.numel(), n_out), dtype=cdtype, device=op.device)
        E[torch.arange(e.numel()), e] = 1
        Y = rmv(E.reshape(e.numel(), *op.out_shape)).reshape(e.numel(), -1)
        out[s : s + e.numel()] = Y.to(dtype).cpu()
    return out


def _dense_spectrum(
    op: LinearOperator, dtype: torch.dtype, vectors: bool, solver: str, progress: bool
) -> SpectrumResult:
    t0 = time.perf_counter()
    n_out, n_in = op.shape
    n_vals = min(n_out, n_in)
    info: dict = {}
    if vectors:
        M = op.materialize(dtype=dtype, progress=progress).cpu()
        t1 = time.perf_counter()
        U, s, Vh = torch.linalg.svd(M, full_matrices=False)
        t2 = time.perf_counter()
        return SpectrumResult(
            values=s, U=U, V=Vh.T.contiguous(), method="exact", route="dense-svd", dtype=dtype,
            timings={"materialize": t1 - t0, "svd": t2 - t1, "total": t2 - t0}, shape=op.shape,
            n_zero_structural=None if _active_rows(op) is None else max(0, n_vals - _active_rows(op).size),
        )
    rows = _active_rows(op)
    M = _dense_rows(op, rows, dtype, progress).cpu()
    t1 = time.perf_counter()
    m = M.shape[0]
    if solver == "auto":
        solver = "svd" if min(M.shape) <= 2048 else "gram"
    if solver == "svd":
        s = torch.linalg.svdvals(M)
        vals = s[:n_vals]
        if s.numel() < n_vals:
            vals = torch.cat([s, torch.zeros(n_vals - s.numel(), dtype=dtype)])
        route = "dense-svd"
        t2 = t3 = time.perf_counter()
    else:
        G = M @ M.T if m <= n_in else M.T @ M
        del M
        t2 = time.perf_counter()
        vals = _values_from_gram(_eigvalsh(G, overwrite=True), n_vals, dtype)
        t3 = time.perf_counter()
        route = "dense-gram"
        info["gram_size"] = G.shape[0]
    info["rows"] = m
    return SpectrumResult(
        values=vals, method="exact", route=route, dtype=dtype,
        timings={"materialize": t1 - t0, "gram": t2 - t1, "eig": t3 - t2, "total": time.perf_counter() - t0},
        n_zero_structural=None if rows is None else max(0, n_vals - rows.size), shape=op.shape, info=info,
    )


# ============================================================================================
# Iterative: restarted block Krylov (torch) and SciPy svds
# ============================================================================================
class _torch_threads:  # noqa: N801 - used like a function
    """Context manager: run with ``n`` torch threads (``None``: unchanged), then restore."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
        return False


def _products(op: LinearOperator, transpose: bool):
    """Row-batched products on flat vectors: ``A(X)`` with ``X`` ``(b, n)`` and its adjoint."""
    in_shape, out_shape = (op.out_shape, op.in_shape) if transpose else (op.in_shape, op.out_shape)
    fwd, adj = (op._rmatmat, op._matmat) if transpose else (op._matmat, op._rmatmat)
    counts = {"forward": 0, "adjoint": 0}

    def A(X):
        counts["forward"] += X.shape[0]
        return fwd(X.reshape(X.shape[0], *in_shape)).reshape(X.shape[0], -1)

    def At(Y):
        counts["adjoint"] += Y.shape[0]
        return adj(Y.reshape(Y.shape[0], *out_shape)).reshape(Y.shape[0], -1)

    return A, At, counts


def _orth_against(Z: torch.Tensor, Q: torch.Tensor | None, drop_tol: float) -> torch.Tensor:
    """Rows of ``Z`` orthonormalized against the rows of ``Q`` and each other (block CGS2 +
    CholeskyQR, repeated once, Householder QR when Cholesky fails); rows that lie in the span
    of ``Q`` to working precision are dropped."""
    tiny = torch.finfo(Z.dtype).tiny
    norms0 = Z.norm(dim=1).clamp_min(tiny)
    has_q = Q is not None and Q.shape[0] > 0
    X = Z
    for sweep in range(2):
        if has_q:
            for _ in range(2):
                X = X - (X @ Q.T) @ Q
        if sweep == 0:
            keep = X.norm(dim=1) > 10 * drop_tol * norms0
            if not bool(keep.all()):
                X = X[keep]
            if X.shape[0] == 0:
                return X
        L, info = torch.linalg.cholesky_ex(X @ X.T)
        d = L.diagonal()
        if int(info) == 0 and bool((d > math.sqrt(drop_tol) * d.max()).all()):
            eye = torch.eye(L.shape[0], dtype=L.dtype, device=L.device)
            X = torch.linalg.solve_triangular(L, eye, upper=False) @ X
        else:
            Qz, R = torch.linalg.qr(X.T)
            dr = R.diagonal().abs()
            X = Qz.T[dr > drop_tol * dr.max().clamp_min(tiny)]
            if X.shape[0] == 0:
                return X
    return X


def _block_krylov(
    op: LinearOperator,
    k: int,
    largest: bool,
    *,
    block: int | None,
    ncv: int | None,
    tol: float,
    max_iter: int,
    seed: int,
    vectors: bool,
) -> SpectrumResult:
    """Thick-restart block Lanczos on ``J^T J`` (on the smaller side).

    The basis ``Q`` (rows) grows by blocks of ``block`` vectors, ``q -> orth(J^T J q)``, up to
    ``ncv`` vectors; then the ``keep = k + block`` best Ritz vectors are kept and the next block
    is the dominant part of their residuals (which span at most ``block`` directions: the
    block analogue of thick-restart Lanczos), so every product extends the Krylov space.
    ``J q`` and ``J^T J q`` are stored for every basis vector: Ritz values, vectors and residuals
    cost no extra products. Rayleigh-Ritz uses the small Gram ``(J Q^T)^T (J Q^T)`` for the
    largest values and the SVD of ``J Q^T`` (no squaring) for the smallest.
    """
    t0 = time.perf_counter()
    n_out0, n_in0 = op.shape
    transpose = n_in0 > n_out0  # iterate on the smaller side
    A, At, counts = _products(op, transpose)
    n, n_img = min(n_out0, n_in0), (n_in0 if transpose else n_out0)
    dtype, device = op.dtype, op.device
    b = max(1, min(block or 2, n))
    keep = min(n, k + b)
    ncv = min(n, max(keep + b, ncv) if ncv is not None else max(3 * k, keep + 2 * b, 16))
    eps = torch.finfo(dtype).eps
    drop_tol = 100 * eps
    cap = ncv + b
    Qb = torch.empty((cap, n), dtype=dtype, device=device)  # basis rows q
    Yb = torch.empty((cap, n_img), dtype=dtype, device=device)  # J q
    Zb = torch.empty((cap, n), dtype=dtype, device=device)  # J^T J q
    g = torch.Generator().manual_seed(seed)
    X0 = _orth_against(torch.randn((b, n), generator=g, dtype=dtype).to(device), None, drop_tol)

    def append(W, p):
        q = W.shape[0]
        Qb[p : p + q] = W
        Yb[p : p + q] = A(W)
        Zb[p : p + q] = At(Yb[p : p + q])
        return p + q

    p = append(X0, 0)
    last = (0, p)
    converged, it = False, 0
    while True:
        while p < ncv:
            W = _orth_against(Zb[last[0] : last[1]], Qb[:p], drop_tol)[: ncv - p]
            if W.shape[0] == 0:
                break
            last = (p, p + W.shape[0])
            p = append(W, p)
        it += 1
        Q, Y, Z = Qb[:p], Yb[:p], Zb[:p]
        if largest:
            H = Y @ Y.T
            theta, E = torch.linalg.eigh((H + H.T) / 2)
            order = torch.arange(theta.numel() - 1, -1, -1, device=device)[: min(keep, p)]
            E = E[:, order]
            s = torch.sqrt(theta[order].clamp_min(0))
            smax = float(s[0]) if s.numel() else 0.0
        else:
            _, s_all, Vh = torch.linalg.svd(Y.T, full_matrices=False)
            m_ = s_all.numel()
            order = torch.arange(m_ - 1, -1, -1, device=device)[: min(keep, m_)]
            E = Vh[order].T
            s = s_all[order]
            smax = float(s_all[0]) if m_ else 0.0
        V_rows = E.T @ Q
        AV = E.T @ Z  # J^T J v
        JV = E.T @ Y  # J v
        tiny = max(smax, 1e-300) * math.sqrt(eps)
        nz = s > tiny
        sdiv = torch.where(nz, s, torch.ones_like(s))
        res_sv = torch.where(nz, (AV / sdiv[:, None] - s[:, None] * V_rows).norm(dim=1), JV.norm(dim=1))
        exhausted = p >= n or last[1] == last[0]
        if bool((res_sv[:k] <= tol * max(smax, 1e-300)).all()) or exhausted:
            converged = True
            break
        if it >= max_iter:
            break
        # thick restart: keep the best Ritz vectors, continue from their residual block
        R = AV - (s**2)[:, None] * V_rows
        for _ in range(2):
            R = R - (R @ V_rows.T) @ V_rows
        lam, F_ = torch.linalg.eigh(R @ R.T)
        top = torch.arange(lam.numel() - 1, -1, -1, device=device)[:b]
        lam, F_ = lam[top], F_[:, top]
        good = lam > (drop_tol**2) * max(float(lam[0]) if lam.numel() else 0.0, 1e-300)
        W = (F_[:, good].T @ R) / torch.sqrt(lam[good])[:, None]
        kk = V_rows.shape[0]
        Qb[:kk], Yb[:kk], Zb[:kk] = V_rows, JV, AV
        p = kk
        W = _orth_against(W, Qb[:p], drop_tol) if W.shape[0] else W
        if W.shape[0] == 0:
            last = (p, p)
            continue
        last = (p, p + W.shape[0])
        p = append(W, p)
    # explicit residuals of the returned triplets (both sides, fresh products)
    Vk, sk = V_rows[:k], s[:k]
    JVk = A(Vk)
    nzk = sk > tiny
    sdivk = torch.where(nzk, sk, torch.ones_like(sk))[:, None]
    Uk = torch.where(nzk[:, None], JVk / sdivk, torch.zeros_like(JVk))
    Uk = torch.where(nzk[:, None], Uk / Uk.norm(dim=1, keepdim=True).clamp_min(1e-300), Uk)
    r1 = (JVk - sk[:, None] * Uk).norm(dim=1)
    r2 = (At(Uk) - sk[:, None] * Vk).norm(dim=1)
    resid = torch.where(nzk, torch.sqrt(r1**2 + r2**2), JVk.norm(dim=1)).detach().cpu()
    converged = converged and bool((resid <= 10 * tol * max(smax, 1e-300)).all())
    Uk_cols, Vk_cols = Uk.T.contiguous(), Vk.T.contiguous()
    if transpose:
        Uk_cols, Vk_cols = Vk_cols, Uk_cols
    values = sk.detach().clone()
    if not largest:
        values = torch.flip(values, [0])
        Uk_cols, Vk_cols, resid = torch.flip(Uk_cols, [1]), torch.flip(Vk_cols, [1]), torch.flip(resid, [0])
    return SpectrumResult(
        values=values.cpu(),
        U=Uk_cols if vectors else None,
        V=Vk_cols if vectors else None,
        method="topk" if largest else "bottomk",
        route="block-krylov",
        dtype=dtype,
        converged=converged,
        iterations=it,
        residuals=resid,
        timings={"total": time.perf_counter() - t0},
        shape=op.shape,
        tol=tol,
        info={"block": b, "ncv": ncv, "keep": keep, "products": dict(counts), "max_iter": max_iter},
    )


def _scipy_svds(
    op: LinearOperator, k: int, largest: bool, solver: str, tol: float, max_iter: int | None,
    seed: int, vectors: bool,
) -> SpectrumResult:
    from scipy.sparse.linalg import ArpackNoConvergence, svds
    from scipy.sparse.linalg import LinearOperator as SciPyOperator

    t0 = time.perf_counter()
    base = op.to_scipy()
    counts = {"forward": 0, "adjoint": 0}

    def mv(v):
        counts["forward"] += 1 if np.ndim(v) == 1 else np.shape(v)[1]
        return base.matvec(v)

    def rmv(w):
        counts["adjoint"] += 1 if np.ndim(w) == 1 else np.shape(w)[1]
        return base.rmatvec(w)

    def mm(V):
        counts["forward"] += V.shape[1]
        return base.matmat(V)

    def rmm(W):
        counts["adjoint"] += W.shape[1]
        return base.rmatmat(W)

    A = SciPyOperator(base.shape, matvec=mv, rmatvec=rmv, matmat=mm, rmatmat=rmm, dtype=base.dtype)
    converged, err = True, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            u, s, vt = svds(
                A, k=k, which="LM" if largest else "SM", tol=tol, maxiter=max_iter, solver=solver,
                random_state=seed, return_singular_vectors=True,
            )
    except ArpackNoConvergence as exc:
        converged, err = False, str(exc)
        u = s = vt = None
    if s is None:
        vals = torch.full((k,), float("nan"), dtype=op.dtype)
        return SpectrumResult(
            values=vals, method="topk" if largest else "bottomk", route=solver, dtype=op.dtype,
            converged=False, timings={"total": time.perf_counter() - t0}, shape=op.shape, tol=tol,
            info={"products": counts, "error": err},
        )
    order = np.argsort(-s)  # descending, for topk and bottomk alike
    s, u, vt = s[order], u[:, order], vt[order]
    U = torch.from_numpy(np.ascontiguousarray(u)).to(op.dtype)
    V = torch.from_numpy(np.ascontiguousarray(vt.T)).to(op.dtype)
    st = torch.from_numpy(np.ascontiguousarray(s)).to(op.dtype)
    JV = op.matmat(V.to(op.device)).cpu()
    JtU = op.rmatmat(U.to(op.device)).cpu()
    resid = torch.sqrt(((JV - U * st).norm(dim=0)) ** 2 + ((JtU - V * st).norm(dim=0)) ** 2)
    smax = float(st.max()) if st.numel() else 0.0
    rtol = max(tol, math.sqrt(torch.finfo(op.dtype).eps)) if tol else math.sqrt(torch.finfo(op.dtype).eps)
    converged = bool((resid <= rtol * max(smax, 1e-300)).all())
    return SpectrumResult(
        values=st, U=U if vectors else None, V=V if vectors else None,
        method="topk" if largest else "bottomk", route=solver, dtype=op.dtype, converged=converged,
        iterations=0, residuals=resid, timings={"total": time.perf_counter() - t0}, shape=op.shape,
        tol=tol, info={"products": counts},
    )


# ============================================================================================
# Public API
# ============================================================================================
def spectrum(
    op: LinearOperator,
    method: str = "exact",
    *,
    k: int | None = None,
    vectors: bool = False,
    dtype: torch.dtype | None = None,
    route: str = "auto",
    solver: str = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
    block_size: int | None = None,
    ncv: int | None = None,
    seed: int = 0,
    products: str = "auto",
    dense_solver: str = "auto",
    progress: bool = False,
) -> SpectrumResult:
    """Singular values (and vectors) of a linear operator.

    Args:
        op: a :class:`~linstab.operators.LinearOperator` (unit, stage or network Jacobian).
        method: ``"exact"`` (all values), ``"topk"`` (``k`` largest) or ``"bottomk"`` (``k``
            smallest).
        k: number of triplets for ``"topk"``/``"bottomk"``; with ``"exact"`` the result is
            truncated to the ``k`` largest.
        vectors: also return ``U`` and ``V``. With ``"exact"`` this takes the dense SVD route
            (``O(n^3)``; use ``"topk"`` for large operators).
        dtype: float32 or float64 for the dense linear algebra of ``"exact"`` (default
            float64; sparse structure is always built in float64). Iterative methods compute
            in the operator's dtype; a different ``dtype`` is an error there.
        route: for ``"exact"``: ``"auto"`` (structured when the unit allows it, else dense),
            ``"structured"`` (raise if impossible), ``"gram"`` (``m x m`` Gram from sparse
            factors; units with a ReLU mask) or ``"dense"``.
        solver: for iterative methods: ``"auto"``/``"block-krylov"`` (torch), ``"arpack"``,
            ``"propack"`` or ``"lobpcg"`` (SciPy ``svds``).
        tol: residual tolerance relative to the largest singular value (default 1e-8 in
            float64, 1e-4 in float32).
        max_iter: restarts of the block Krylov method (default 60 for topk, 300 for bottomk)
            or SciPy's ``maxiter``.
        block_size: block size of the Krylov method (default 2: small blocks reach a higher
            Krylov degree per product; on unit 1.5 of ResNet-56, k = 32, block 2 needed 500
            products each way against 864 for block 8).
        ncv: largest basis before a restart (default ``max(3 k, k + 3 block_size, 16)``).
        seed: seed of the random start.
        products: iterative methods: ``"auto"`` (``"topk"``: the operator's own products,
            which were faster than the single-threaded sparse factors at 1 and 2 threads on
            an idle machine; ``"bottomk"``: through the sparse factors ``D_out (alpha S + U W)``
            of units with ReLU masks, and compositions of them, else the operator),
            ``"operator"`` or ``"factors"``.
        dense_solver: dense route: ``"auto"`` (``svdvals`` up to 2048 rows/cols, else the Gram
            and ``eigvalsh``), ``"svd"`` or ``"gram"``.
        progress: progress bar while materializing dense matrices.

    Returns:
        a :class:`SpectrumResult`.

    Raises:
        TypeError: for a non-operator, bad dtype or a non-integer ``k``.
        ValueError: for an unknown method/route/solver, ``k`` out of ``1..min(n_out, n_in)``,
            or ``route="structured"`` on an operator without the structure.
    """
    _check_op(op)
    _check_dtype(dtype)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if dense_solver not in ("auto", "svd", "gram"):
        raise ValueError(f"dense_solver must be 'auto', 'svd' or 'gram', got {dense_solver!r}")
    n_vals = min(op.shape)
    if method == "exact":
        if k is not None:
            k = _check_k(k, n_vals, method)
        dtype = dtype or torch.float64
        ok, why = _structured_ok(op)
        if route == "structured" and not ok:
            raise ValueError(f"no structured reduction for this operator: {why}")
        if vectors:
            res = _dense_spectrum(op, dtype, True, dense_solver, progress)
        elif route in ("auto", "structured") and ok:
            res = _structured_spectrum(op, dtype)
        elif route == "gram" or (route == "auto" and _factor_plan(op)[0] is not None):
            if _factor_plan(op)[0] is None:
                raise ValueError(f"route='gram' needs a unit with ReLU masks: {_factor_plan(op)[1]}")
            res = _gram_spectrum(op, dtype)
        else:
            res = _dense_spectrum(op, dtype, False, dense_solver, progress)
        if not ok and route == "auto":
            res.info.setdefault("why_not_structured", why)
        if k is not None:
            res.values = res.values[:k]
            if res.U is not None:
                res.U, res.V = res.U[:, :k], res.V[:, :k]
        return res
    # iterative
    if k is None:
        raise ValueError(f"method={method!r} needs k (1..{n_vals})")
    k = _check_k(k, n_vals, method)
    if dtype is not None and dtype != op.dtype:
        raise TypeError(
            f"method={method!r} computes with the operator's products in {op.dtype}; got "
            f"dtype={dtype}. Linearize in {dtype} (net.linearize(x, dtype=...)) instead."
        )
    eps = torch.finfo(op.dtype).eps
    tol = tol if tol is not None else (1e-8 if op.dtype == torch.float64 else 1e-4)
    if not (isinstance(tol, float | int) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    largest = method == "topk"
    if products not in ("auto", "operator", "factors"):
        raise ValueError(f"products must be 'auto', 'operator' or 'factors', got {products!r}")
    t_f = time.perf_counter()
    work = op
    if products == "factors" or (products == "auto" and not largest):
        fop = factor_operator(op)
        if fop is None and products == "factors":
            raise ValueError("products='factors' needs unit Jacobians with ReLU masks")
        work = fop or op
    t_f = time.perf_counter() - t_f
    if solver in ("auto", "block-krylov"):
        max_iter = max_iter if max_iter is not None else (60 if largest else 300)
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        # with single-threaded sparse products on the CPU, the Krylov method's small dense
        # operations are fastest single-threaded (no OpenMP synchronisation per tiny op)
        single = work is not op and work.device.type == "cpu"
        with _torch_threads(1 if single else None):
            res = _block_krylov(
                work, k, largest, block=block_size, ncv=ncv, tol=max(float(tol), 10 * eps),
                max_iter=int(max_iter), seed=seed, vectors=vectors,
            )
    else:
        if solver in ("arpack", "lobpcg") and k >= n_vals:
            raise ValueError(f"solver={solver!r} needs k < min(n_out, n_in) = {n_vals}, got {k}")
        res = _scipy_svds(work, k, largest, solver, float(tol), max_iter, seed, vectors)
    res.shape = op.shape
    res.info["products_via"] = "sparse-factors" if work is not op else "operator"
    if work is not op:
        res.timings["factors"] = t_f
        res.timings["total"] = res.timings.get("total", 0.0) + t_f
    if not res.converged:
        has_res = res.residuals is not None and res.residuals.numel() > 0
        worst = float(res.residuals.max()) if has_res else math.nan
        warnings.warn(
            f"{res.route} did not reach tol={tol:g} for {method} k={k} "
            f"(iterations {res.iterations}, max residual {worst:.3g}, largest value "
            f"{float(res.values.max()) if res.values.numel() else math.nan:.4g}); "
            "increase max_iter or block_size",
            ConvergenceWarning,
            stacklevel=2,
        )
    return res


def _check_bands_args(thresholds, zero_tol) -> tuple[float, float, float]:
    try:
        lo, hi = (float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise TypeError(f"thresholds must be two numbers (lo, hi), got {thresholds!r}") from None
    zt = float(zero_tol)
    if not (0 < zt < lo <= hi):
        raise ValueError(f"need 0 < zero_tol < lo <= hi, got zero_tol={zt}, thresholds=({lo}, {hi})")
    return lo, hi, zt


def _count_from_values(s: torch.Tensor, n: int, lo: float, hi: float, zt: float) -> tuple[int, int, int, int]:
    s = s.to(torch.float64)
    above = int((s > hi).sum())
    plateau = int(((s >= lo) & (s <= hi)).sum())
    below = int(((s > zt) & (s < lo)).sum())
    zero = n - above - plateau - below
    return above, plateau, below, zero


def bands(
    op: LinearOperator,
    thresholds: tuple[float, float] = (0.99, 1.01),
    zero_tol: float = 1e-6,
    *,
    route: str = "auto",
    min_block: int = 384,
    threads: int | None = None,
) -> BandCounts:
    """Exact counts of singular values above, inside and below ``[lo, hi]`` and at zero.

    Units with ReLU masks are counted by Sylvester's law of inertia, without singular values:

    * identity shortcut (``"inertia-structured"``): ``#(s > t) = #pos(-c I_m) + #pos(N(c)) - r``
      with ``c = t^2 - alpha^2`` and the sparse ``2r x 2r`` matrix
      ``N(c) = Q^T Q / c - M^{-1}`` (Haynsworth inertia additivity on
      ``[[-c I, Q], [Q^T, -M^{-1}]]``);
    * any shortcut (``"inertia-gram"``): ``#(s > t) = #pos(J_S J_S^T - t^2 I)`` with the sparse
      Gram of the active rows.

    Both matrices are banded after ordering unknowns by spatial position and are factored by
    block ``LDL^T`` (see :func:`_block_inertia`); all in float64. Other operators fall back to
    an exact spectrum (``"spectrum-<route>"``).

    Args:
        op: the operator.
        thresholds: ``(lo, hi)`` of the plateau band (paper: ``(0.99, 1.01)``).
        zero_tol: singular values ``<= zero_tol`` count as zero.
        route: ``"auto"``, ``"structured"``, ``"gram"`` or ``"spectrum"``.
        min_block: smallest diagonal block of the block ``LDL^T``.
        threads: torch threads while counting (default ``None``: torch's setting; on an idle
            2-core machine 2 threads counted 1.3-1.7x faster than 1, e.g. unit 1.2 of
            ResNet-56 in 7.6 s against 12.5 s; on a machine shared with other jobs use 1).

    Returns:
        a :class:`BandCounts`.
    """
    _check_op(op)
    lo, hi, zt = _check_bands_args(thresholds, zero_tol)
    if route not in ("auto", "structured", "gram", "spectrum"):
        raise ValueError(f"route must be 'auto', 'structured', 'gram' or 'spectrum', got {route!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    with _torch_threads(threads):
        return _bands(op, lo, hi, zt, route, min_block)


def _bands(op: LinearOperator, lo: float, hi: float, zt: float, route: str, min_block: int) -> BandCounts:
    t0 = time.perf_counter()
    n_out, n_in = op.shape
    n = min(n_out, n_in)
    ok, why = _structured_ok(op)
    has_factors = _factor_plan(op)[0] is not None
    if route == "structured" and not ok:
        raise ValueError(f"no structured reduction for this operator: {why}")
    if route == "gram" and not has_factors:
        raise ValueError(f"route='gram' needs a unit with ReLU masks: {_factor_plan(op)[1]}")
    use_struct = ok and route in ("auto", "structured")
    if use_struct:
        f = unit_factors(op)
        if f.alpha == 0:
            use_struct = False  # the inertia formula needs M invertible
            if route == "structured":
                raise ValueError("route='structured' needs alpha != 0")
    if use_struct:
        red = _reduce(f)
        t1 = time.perf_counter()
        # a threshold at |alpha| (c = 0) is counted just above and below it: the values equal
        # to |alpha| are the structural plateau, every other value is separated from it
        a = abs(f.alpha)
        at = [abs(t - a) <= 1e-12 * max(a, 1.0) for t in (zt, lo, hi)]
        ts = [t for t, on in zip((zt, lo, hi), at, strict=True) if not on]
        if any(at):
            ts += [a * (1 + 1e-9), a * (1 - 1e-9)]
        counts, n_exact = _structured_counts(red, tuple(ts), min_block)
        if n_exact is None:
            n_exact = _structured_spectrum(op, torch.float64).n_exact_ones
        got = dict(zip(ts, counts, strict=True))
        C = {}
        for name, t, on in zip(("zt", "lo", "hi"), (zt, lo, hi), at, strict=True):
            if on:
                above_a = got[a * (1 + 1e-9)][0]
                C[name] = (above_a, got[a * (1 - 1e-9)][0] - above_a)
            else:
                C[name] = got[t]
        above = C["hi"][0]
        plateau = C["lo"][0] + C["lo"][1] - above
        below = C["zt"][0] - C["lo"][0] - C["lo"][1]
        zero = n - above - plateau - below
        return BandCounts(
            n=n, thresholds=(lo, hi), zero_tol=zt, above=above, plateau=plateau, below=below,
            zero=zero, n_exact_ones=n_exact, alpha=f.alpha, route="inertia-structured",
            timings={"factors": f.seconds, "reduce": red.seconds, "inertia": time.perf_counter() - t1,
                     "total": time.perf_counter() - t0},
        )
    if has_factors and route in ("auto", "gram"):
        f = unit_factors(op)
        t1 = time.perf_counter()
        JS = _factors_js(f)
        GG = (JS @ JS.T).tocsr()
        keys = f.out_keys[f.out_active]
        perm = np.lexsort((np.arange(keys.size), keys))
        Gp = GG[perm][:, perm].tocsr()
        bounds = _partition(Gp, min_block)
        eye = sp.identity(Gp.shape[0], format="csr")
        t2 = time.perf_counter()
        C = {}
        for name, t in (("zt", zt), ("lo", lo), ("hi", hi)):
            p, _, z = _block_inertia((Gp - (t * t) * eye).tocsr(), bounds)
            C[name] = (p, z)
        above = C["hi"][0]
        plateau = C["lo"][0] + C["lo"][1] - above
        below = C["zt"][0] - C["lo"][0] - C["lo"][1]
        zero = n - above - plateau - below
        return BandCounts(
            n=n, thresholds=(lo, hi), zero_tol=zt, above=above, plateau=plateau, below=below,
            zero=zero, route="inertia-gram",
            timings={"factors": f.seconds, "gram": t2 - t1, "inertia": time.perf_counter() - t2,
                     "total": time.perf_counter() - t0},
        )
    res = spectrum(op, "exact", dtype=torch.float64)
    above, plateau, below, zero = _count_from_values(res.values, n, lo, hi, zt)
    return BandCounts(
        n=n, thresholds=(lo, hi), zero_tol=zt, above=above, plateau=plateau, below=below, zero=zero,
        n_exact_ones=res.n_exact_ones, alpha=res.alpha, route=f"spectrum-{res.route}",
        timings={"total": time.perf_counter() - t0},
    )


def _structured_counts(red: _Reduced, ts: tuple[float, ...], min_block: int):
    """``(#(s > t), #(s == t))`` for each ``t`` over the active rows, and the exact-alpha count."""
    r, m, alpha = red.r, red.m, red.alpha
    if r == 0:
        return [((m if t < abs(alpha) else 0), 0) for t in ts], m
    I_r = sp.identity(r, format="csr")
    # spatial order, U and W unknowns of one inner unit side by side
    keys = np.concatenate([red.keys, red.keys])
    typ = np.concatenate([np.zeros(r, np.int64), np.ones(r, np.int64)])
    perm = np.lexsort((typ, np.arange(2 * r) % r, keys))
    pattern = sp.bmat([[abs(red.G11) + I_r, abs(red.G12) + I_r], [None, abs(red.G22) + abs(red.A)]])
    pattern = (pattern + pattern.T).tocsr()[perm][:, perm].tocsr()
    bounds = _partition(pattern, min_block)
    G = sp.bmat([[red.G11, red.G12], [red.G12.T, red.G22]]).tocsr()
    Minv = sp.bmat([[None, I_r / alpha], [I_r / alpha, -red.A / alpha**2]]).tocsr()
    out = []
    for t in ts:
        c = t * t - alpha * alpha
        N = (G / c - Minv).tocsr()[perm][:, perm].tocsr()
        p, _, z = _block_inertia(N, bounds)
        out.append(((m if c < 0 else 0) + p - r, z))
    if 2 * r >= m:
        return out, 0  # no structural plateau (the structural count m - 2r is not positive)
    # Q of full column rank (G positive definite): exactly m - 2r values equal |alpha|
    if _block_is_pd(G[perm][:, perm].tocsr(), bounds, _rank_tol(G)):
        return out, m - 2 * r
    return out, None  # rank-deficient Q: the core may hold more exact |alpha| values


# ============================================================================================
# Network-level helpers (CLI `bands`, Figures 1 and 2, reports)
# ============================================================================================
def _tqdm(iterable=None, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


def unit_bands(
    net,
    image: torch.Tensor,
    thresholds: tuple[float, float] = (0.99, 1.01),
    zero_tol: float = 1e-6,
    *,
    dtype: torch.dtype = torch.float64,
    units: list[str] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Band counts of every residual unit of a network at one image (paper Figure 2).

    Args:
        net: a :class:`~linstab.network.Network`.
        image: ``(3, H, W)`` in [0, 1].
        thresholds: ``(lo, hi)``.
        zero_tol: values at or below it count as zero.
        dtype: dtype of the linearization (the counts are computed in float64).
        units: addresses ``"S.K"`` to restrict to (default: all).
        progress: show a progress bar.

    Returns:
        one dict per unit: ``model, stage, unit, address, kind, shortcut, n``, the counts
        ``above, plateau, below, zero`` and fractions ``frac_*``, ``exact_ones`` (``None`` when
        not structured), ``frac_exact_ones``, ``route``, ``seconds``, ``thresholds``, ``zero_tol``.
    """
    _check_bands_args(thresholds, zero_tol)
    lin = net.linearize(image, dtype=dtype)
    todo = [u for u in net.units if units is None or u.address in set(units)]
    rows = []
    bar = _tqdm(todo, desc=f"bands {net.name}", unit="unit", disable=not progress)
    for u in bar:
        bar.set_postfix_str(u.address)
        op = lin.unit(u.stage, u.index)
        t = time.perf_counter()
        bc = bands(op, thresholds, zero_tol)
        fr = bc.fractions
        rows.append(
            {
                "model": net.name,
                "stage": u.stage,
                "unit": u.index,
                "address": u.address,
                "kind": u.kind,
                "shortcut": u.shortcut,
                "n": bc.n,
                "above": bc.above,
                "frac_above": fr["above"],
                "plateau": bc.plateau,
                "frac_plateau": fr["plateau"],
                "below": bc.below,
                "frac_below": fr["below"],
                "zero": bc.zero,
                "frac_zero": fr["zero"],
                "exact_ones": bc.n_exact_ones,
                "frac_exact_ones": fr.get("exact_ones"),
                "alpha": bc.alpha,
                "route": bc.route,
                "seconds": time.perf_counter() - t,
                "thresholds": (float(thresholds[0]), float(thresholds[1])),
                "zero_tol": float(zero_tol),
            }
        )
    return rows


def _csv_columns(lo: float, hi: float) -> list[tuple[str, str]]:
    return [
        ("stage", "stage"), ("unit", "unit"), ("address", "address"), ("kind", "kind"),
        ("shortcut", "shortcut"), ("n", "n"),
        (f"n_gt_{hi:g}", "above"), (f"frac_gt_{hi:g}", "frac_above"),
        (f"n_in_{lo:g}_{hi:g}", "plateau"), (f"frac_in_{lo:g}_{hi:g}", "frac_plateau"),
        (f"n_in_0_{lo:g}", "below"), (f"frac_in_0_{lo:g}", "frac_below"),
        ("n_zero", "zero"), ("frac_zero", "frac_zero"),
        ("n_exact_ones", "exact_ones"), ("frac_exact_ones", "frac_exact_ones"),
        ("route", "route"), ("seconds", "seconds"),
    ]


def write_bands_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write :func:`unit_bands` rows as CSV (band names carry the thresholds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lo, hi = rows[0]["thresholds"] if rows else (0.99, 1.01)
    cols = _csv_columns(lo, hi)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([c for c, _ in cols])
        for r in rows:
            out = []
            for _, key in cols:
                v = r.get(key)
                out.append("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
            w.writerow(out)
    return path


def scree_data(
    net,
    images: torch.Tensor,
    *,
    unit_index: int = 5,
    stages: bool = True,
    dtype: torch.dtype = torch.float64,
    stage_method: str = "auto",
    stage_k: int = 256,
    max_dense: int = 8192,
    image_ids: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Spectra for the paper's Figure 1 for one network: unit ``S.unit_index`` of each stage,
    the first (down-sampling) unit of each stage, and each stage, at several images.

    Args:
        net: a :class:`~linstab.network.Network`.
        images: ``(N, 3, H, W)`` in [0, 1].
        unit_index: the unit of each stage for the first row (paper: 5); clipped to the stage.
        stages: include the stage spectra (the expensive part).
        dtype: linearization and dense dtype.
        stage_method: ``"exact"``, ``"topk"`` or ``"auto"`` (exact when the smaller side is at
            most ``max_dense``, else the ``stage_k`` largest values).
        stage_k: values per stage for ``"topk"``.
        max_dense: size limit of ``"auto"``.
        image_ids: labels of the images.
        progress: show a progress bar.

    Returns:
        ``{"model", "images", "rows": {"unit": [...], "downsampling": [...], "stage": [...]}}``;
        each panel is ``{"stage", "label", "n", "method", "spectra": [np.ndarray per image],
        "exact_ones": [...], "alpha"}``.
    """
    if stage_method not in ("auto", "exact", "topk"):
        raise ValueError(f"stage_method must be 'auto', 'exact' or 'topk', got {stage_method!r}")
    images = images if images.ndim == 4 else images.unsqueeze(0)
    ids = image_ids or [str(i) for i in range(images.shape[0])]
    nst = len(net.stages)
    rows: dict[str, list[dict]] = {"unit": [], "downsampling": []}
    if stages:
        rows["stage"] = []
    for s in range(1, nst + 1):
        k5 = min(unit_index, len(net.stages[s - 1]))
        rows["unit"].append({"stage": s, "label": f"unit {s}.{k5}", "address": f"{s}.{k5}", "spectra": []})
        info = net.unit(s, 1)
        rows["downsampling"].append(
            {"stage": s, "label": f"unit {s}.1 ({info.kind})", "address": f"{s}.1", "spectra": []}
        )
        if stages:
            rows["stage"].append({"stage": s, "label": f"stage {s}", "spectra": []})
    tasks = [(i, key, p) for i in range(images.shape[0]) for key in rows for p in rows[key]]
    bar = _tqdm(total=len(tasks), desc=f"spectra {net.name}", unit="spectrum", disable=not progress)
    for i in range(images.shape[0]):
        lin = net.linearize(images[i], dtype=dtype)
        for key, panels in rows.items():
            for p in panels:
                bar.set_postfix_str(f"image {ids[i]} {p['label']}")
                if key == "stage":
                    op = lin.stage(p["stage"])
                    meth = stage_method
                    if meth == "auto":
                        meth = "exact" if min(op.shape) <= max_dense else "topk"
                    if meth == "topk":
                        res = spectrum(op, "topk", k=min(stage_k, min(op.shape)))
                    else:
                        res = spectrum(op, "exact", dtype=dtype, progress=False)
                else:
                    s_, k_ = (int(v) for v in p["address"].split("."))
                    op = lin.unit(s_, k_)
                    res = spectrum(op, "exact", dtype=dtype)
                p.setdefault("n", min(op.shape))
                p.setdefault("method", []).append(f"{res.method}:{res.route}")
                p["spectra"].append(res.values.to(torch.float64).numpy())
                p.setdefault("exact_ones", []).append(res.n_exact_ones)
                p["alpha"] = res.alpha
                bar.update(1)
    bar.close()
    return {"model": net.name, "images": ids, "rows": rows}


# ============================================================================================
# CLI
# ============================================================================================
def _parse_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _cmd_spectrum(args: argparse.Namespace) -> int:
    from .cli import images_from_args, network_from_args
    from .network import parse_unit

    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    net = network_from_args(args)
    x, _, ids = images_from_args(args)
    dtype = _parse_dtype(args.dtype)
    lin = net.linearize(x[0], dtype=dtype)
    if args.unit is not None:
        s, k = parse_unit(args.unit)
        op = lin.unit(s, k)
        what = f"unit {args.unit}"
    elif args.stage is not None:
        op = lin.stage(args.stage)
        what = f"stage {args.stage}"
    else:
        op = lin.network()
        what = "network"
    kwargs = {"vectors": args.vectors}
    if args.method == "exact":
        kwargs.update(k=args.k, dtype=dtype, progress=True)
    else:
        kwargs.update(k=args.k or 32, solver=args.solver, max_iter=args.max_iter)
    res = spectrum(op, args.method, **kwargs)
    path = res.save(
        args.out, extra={"model": net.name, "image": ids[0], "component": what, "n_out": op.shape[0],
                         "n_in": op.shape[1]},
    )
    v = res.values
    print(f"{net.name} {ids[0]} {what}: {v.numel()} singular values ({res.method}, {res.route}, "
          f"{res.timings.get('total', 0):.2f} s)")
    print(f"  largest {float(v[0]):.6g}, smallest {float(v[-1]):.6g}"
          + (f", exactly |alpha|: {res.n_exact_ones}" if res.n_exact_ones is not None else "")
          + (f", structural zeros: {res.n_zero_structural}" if res.n_zero_structural is not None else ""))
    if res.residuals is not None:
        print(f"  max residual {float(res.residuals.max()):.3g}, converged {res.converged}")
    print(f"wrote {path}")
    return 0 if res.converged else 1


def _cmd_bands(args: argparse.Namespace) -> int:
    from .cli import images_from_args, network_from_args

    net = network_from_args(args)
    x, _, ids = images_from_args(args)
    rows = unit_bands(
        net, x[0], tuple(args.thresholds), args.zero_tol, dtype=_parse_dtype(args.dtype), progress=True
    )
    path = write_bands_csv(rows, args.out)
    total = sum(r["seconds"] for r in rows)
    print(f"{net.name} {ids[0]}: {len(rows)} units in {total:.1f} s; wrote {path}")
    return 0


def _networks(args: argparse.Namespace):
    from .cli import default_model_name
    from .network import load_model

    names = args.model or [default_model_name()]
    weights = args.weights or []
    if weights and len(weights) != len(names):
        raise ValueError(f"give one --weights per --model ({len(names)} models, {len(weights)} weights)")
    return [load_model(n, weights=weights[i] if weights else None) for i, n in enumerate(names)]


def _cmd_figure_scree(args: argparse.Namespace) -> int:
    from .cli import images_from_args
    from .plots.spectra import plot_scree

    x, _, ids = images_from_args(args)
    data = []
    for net in _networks(args):
        data.append(
            scree_data(
                net, x, unit_index=args.unit_index, stages=not args.no_stages,
                dtype=_parse_dtype(args.dtype), stage_method=args.stage_method, stage_k=args.stage_k,
                max_dense=args.max_dense, image_ids=ids, progress=True,
            )
        )
    paths = plot_scree(data, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_figure_bands(args: argparse.Namespace) -> int:
    from .cli import images_from_args
    from .plots.spectra import plot_bands

    x, _, ids = images_from_args(args)
    rows = []
    for net in _networks(args):
        r = unit_bands(net, x[0], tuple(args.thresholds), args.zero_tol, dtype=_parse_dtype(args.dtype))
        for row in r:
            row["image"] = ids[0]
        rows.extend(r)
    if args.csv:
        write_bands_csv(rows, args.csv)
    paths = plot_bands(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _add_band_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--thresholds", nargs=2, type=float, default=[0.99, 1.01], metavar=("LO", "HI"),
        help="plateau band [LO, HI] (default 0.99 1.01)",
    )
    p.add_argument("--zero-tol", type=float, default=1e-6, help="values <= this count as 0 (default 1e-6)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="linearization dtype (counts are always computed in float64)")


def add_parser(sub) -> None:
    """Register ``linstab spectrum`` and ``linstab bands``."""
    from .cli import add_image_args, add_model_args

    p = sub.add_parser("spectrum", help="singular values of a unit, stage or network Jacobian")
    add_model_args(p)
    add_image_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", help="unit address STAGE.UNIT, e.g. 1.5")
    which.add_argument("--stage", type=int, help="stage number (1-based)")
    which.add_argument("--network", action="store_true", help="the whole chain of units")
    p.add_argument("--method", default="exact", choices=list(METHODS))
    p.add_argument("--k", type=int, default=None, help="number of values for topk/bottomk (default 32)")
    p.add_argument("--vectors", action="store_true", help="also store singular vectors u, v")
    p.add_argument("--solver", default="auto", choices=list(SOLVERS), help="iterative solver")
    p.add_argument("--max-iter", type=int, default=None, help="iteration limit of the iterative solver")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", required=True, help="output .npz (singular_values, u, v, metadata JSON)")
    p.set_defaults(func=_cmd_spectrum)

    p = sub.add_parser("bands", help="band counts of every unit (paper Figure 2) as CSV")
    add_model_args(p)
    add_image_args(p)
    _add_band_args(p)
    p.add_argument("--out", required=True, help="output .csv")
    p.set_defaults(func=_cmd_bands)


def add_figure_parser(figsub) -> None:
    """Register ``linstab figure scree`` (Figure 1) and ``linstab figure bands`` (Figure 2)."""
    from .cli import add_image_args

    def models(p):
        p.add_argument("--model", action="append", default=None,
                       help="registered model; repeat for side-by-side columns (default: the default model)")
        p.add_argument("--weights", action="append", default=None, help="weights file per --model")

    p = figsub.add_parser("scree", help="Figure 1: scree plots of unit and stage spectra")
    models(p)
    add_image_args(p, multiple=True, default="0-4")
    p.add_argument("--unit-index", type=int, default=5, help="unit of each stage for the top row (default 5)")
    p.add_argument("--no-stages", action="store_true", help="skip the stage spectra (bottom row)")
    p.add_argument("--stage-method", default="auto", choices=["auto", "exact", "topk"],
                   help="stage spectra: exact, top-k, or auto (exact up to --max-dense)")
    p.add_argument("--stage-k", type=int, default=256, help="values per stage with topk (default 256)")
    p.add_argument("--max-dense", type=int, default=8192, help="largest dense stage for auto (default 8192)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", required=True, help="output path (PNG and SVG are written)")
    p.set_defaults(func=_cmd_figure_scree)

    p = figsub.add_parser("bands", help="Figure 2: fractions of singular values per band and unit")
    models(p)
    add_image_args(p)
    _add_band_args(p)
    p.add_argument("--csv", default=None, help="also write the counts as CSV")
    p.add_argument("--out", required=True, help="output path (PNG and SVG are written)")
    p.set_defaults(func=_cmd_figure_bands)
