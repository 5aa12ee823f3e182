"""Symmetric eigenvalues in place: MKL ``?syevd`` from torch's own library or SciPy-OpenBLAS's
2-stage ``?syev``, each self-tested on first use, else ``torch.linalg.eigvalsh``; OpenBLAS
thread control.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from .threads import blas_threads

_LAPACK_2STAGE: dict = {}


_SELF_TEST = ((torch.float64, np.float64, 1e-10), (torch.float32, np.float32, 1e-3))  # dtype, tol


def _eig_self_test(solve, npt, tol: float) -> bool:
    """Whether ``solve`` (values of a symmetric C-order ``npt`` matrix it may destroy, or
    ``None`` on failure) gets a seeded random 40 x 40 matrix right to ``40 tol``.
    """
    a = np.random.default_rng(0).standard_normal((40, 40))
    a = a + a.T
    w = solve(np.array(a, dtype=npt, order="C"))
    return w is not None and bool(np.abs(np.sort(w) - np.linalg.eigvalsh(a)).max() <= tol * 40)


def load_2stage():
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
                            ctypes.c_int,
                            ctypes.c_char,
                            ctypes.c_char,
                            ctypes.c_int64,
                            ctypes.c_void_p,
                            ctypes.c_int64,
                            ctypes.c_void_p,
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


_MKL_SYEVD: dict = {}


def load_mkl_syevd():
    """MKL's Fortran ``?syevd`` exported by torch's CPU library, self-tested; ``None`` if absent.

    Lets :func:`eigvalsh` work in place on a matrix the caller no longer needs instead of
    ``torch.linalg.eigvalsh``'s copy (same routine; the copy of an 8022 x 8022 float64 core is
    515 MB of fresh memory, see docs/spectra.md). Integers are passed in zeroed 8-byte cells,
    which read the same as 4- or 8-byte Fortran integers.
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
    which is destroyed; ``None`` if LAPACK reports an error.
    """
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


def eigvalsh(A: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Eigenvalues (ascending) of a symmetric matrix; the lower triangle is read.

    ``torch.linalg.eigvalsh`` (LAPACK ``syevd``; MKL in the x86 CPU wheels), with torch's
    threads; with ``overwrite=True`` the same MKL routine runs in place on ``A`` (no copy).
    ``LINSTAB_EIGVALSH=openblas-2stage`` selects SciPy's OpenBLAS ``syev_2stage`` instead
    (values only, BLAS-3 band reduction); ``benchmarks/eigensolvers.py`` compares the two
    (results in benchmarks/results/eigensolvers.json).
    """
    n = A.shape[0]
    want = os.environ.get("LINSTAB_EIGVALSH", "").lower() == "openblas-2stage"
    fns = load_2stage() if (want and A.device.type == "cpu" and n >= 64) else None
    if fns is not None and A.dtype in fns:
        a = A.detach().numpy() if (overwrite and A.is_contiguous()) else A.detach().clone().numpy()
        a = np.ascontiguousarray(a)
        w = np.empty(n, dtype=a.dtype)
        with openblas_threads():
            # a C-order symmetric matrix read as column-major is itself; 'U' there = lower here
            info = fns[A.dtype](102, b"N", b"U", n, a.ctypes.data, n, w.ctypes.data)
        if info == 0:
            return torch.from_numpy(np.sort(w))
    if overwrite and A.device.type == "cpu" and n >= 64 and not A.requires_grad:
        mkl = load_mkl_syevd()
        col = A.mT.is_contiguous()
        if mkl is not None and A.dtype in mkl and (col or A.is_contiguous()):
            # column-major A is read as is ('L' = its lower triangle); a row-major one is read as
            # its transpose, whose upper triangle ('U') is A's lower triangle
            w = _syevd_inplace(mkl[A.dtype], A.detach().numpy(), "L" if col else "U")
            if w is not None:
                return torch.from_numpy(w)
    return torch.linalg.eigvalsh(A)


class openblas_threads:  # noqa: N801 - used like a function
    """Context manager: run the OpenBLAS bundled with SciPy with ``n`` threads, then restore.

    ``n=None`` (the default) follows :func:`blas_threads`: torch's thread count, so that
    ``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) makes every dense kernel of linstab
    single-threaded, which is what a machine shared with other processes needs (OpenBLAS
    threads spinning against other work are much slower than one thread).
    """

    def __init__(self, n: int | None = None) -> None:
        self.n = blas_threads() if n is None else n
        self.old = None

    def __enter__(self):
        fns = load_2stage()
        self.ctl = fns.get("threads") if fns else None
        if self.ctl is not None:
            self.old = self.ctl[0]()
            self.ctl[1](self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            self.ctl[1](self.old)
        return False
