"""``spectrum``: all singular values exactly, or the top-k / bottom-k triplets iteratively."""

from __future__ import annotations

import math
import time
import warnings

import torch

from ..io.profile import timed
from ..io.validate import check_int
from ..linalg.exact_parts import exact_parts
from ..linalg.krylov import block_krylov
from ..linalg.results import (
    EXACT_MAX,
    METHODS,
    ROUTES,
    SCIPY_SEED_RANGE,
    SEED_RANGE,
    SOLVERS,
    ConvergenceWarning,
    SpectrumResult,
    check_dtype,
    check_k,
    check_op,
    check_seed,
    check_tol,
)
from ..linalg.svds import scipy_svds
from ..linalg.threads import torch_threads
from ..operators.base import LinearOperator
from ..operators.factors import factor_operator, factor_plan, structured_plan
from ..operators.rows import RowSubset
from .exact import dense_spectrum, gram_spectrum, structured_spectrum

AUTO_EXACT_SMALL = 1024
"""``solver="auto"``: top-k/bottom-k of an operator with at most this many singular values
(``min(n_out, n_in)``) take an exact route (dense is cheap there, and exact)."""

AUTO_EXACT_FRACTION = 8
"""``solver="auto"``: top-k/bottom-k with ``k > min(n_out, n_in) / AUTO_EXACT_FRACTION`` take an
exact route up to :data:`~linstab.linalg.results.EXACT_MAX` values (a Krylov basis of about
``3 k`` vectors of length ``n`` then costs far more than the whole spectrum), and warn above it."""


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
        route: for ``"exact"`` (and for ``"topk"``/``"bottomk"`` when ``solver="auto"`` takes
            an exact route): ``"auto"`` (structured when the unit allows it, else dense;
            a unit whose reduction is rank deficient takes the ``m x m`` Gram when that is
            cheaper, without ``n_exact_ones``), ``"structured"`` (raise if impossible; counts the
            values exactly ``|alpha|``, in float64 for a rank-deficient reduction), ``"gram"``
            (``m x m`` Gram from sparse factors; units with a ReLU mask) or ``"dense"``.
        solver: for iterative methods: ``"auto"``, ``"block-krylov"`` (torch), ``"arpack"``,
            ``"propack"`` or ``"lobpcg"`` (SciPy ``svds``). ``"auto"`` takes an exact route
            when ``min(n_out, n_in) <= EXACT_MAX`` (16384) and either
            ``k > min(n_out, n_in) / 8`` or ``min(n_out, n_in) <= 1024`` (float64 linear
            algebra, returned in the operator's dtype): the result's ``route``
            is then the exact route's, ``info["why_exact"]`` says why, ``values`` (and ``U``,
            ``V``) are the exact ones sliced to ``k`` in the method's order (largest first for
            ``"topk"``, the ``k`` smallest in descending order for ``"bottomk"``, as the
            iterative results), with no ``residuals``. Otherwise it is ``"block-krylov"``
            (with a ``UserWarning`` first when ``k > min(n_out, n_in) / 8``: a long run). An
            explicit solver is always used as given.
        tol: residual tolerance relative to the largest singular value (default 1e-8 in
            float64, 1e-4 in float32).
        max_iter: restarts of the block Krylov method (default 60 for topk, 300 for bottomk)
            or SciPy's ``maxiter``.
        block_size: block size of the Krylov method (default 2: small blocks reach a higher
            Krylov degree per product; docs/spectra.md compares block sizes). A Krylov method
            finds at most ``block_size`` copies of one exactly repeated value: copies the
            structure predicts (the plateau at ``|alpha|``, structural zeros) are checked and
            warned about; for other exact repeats a converged run whose ``k`` values hold
            ``block_size`` copies of one value takes one more cycle from fresh random
            directions and iterates on when it finds more copies
            (:func:`~linstab.linalg.block_krylov`), which catches a repeat separated from the
            values below it but proves nothing: ``"exact"`` or a larger ``block_size`` there.
        ncv: largest basis before a restart (default ``max(3 k, k + 3 block_size, 16)``).
        seed: seed of the random start.
        products: iterative methods: ``"auto"`` (``"topk"``: the operator's own products,
            faster than the sparse factors in the benchmarks of docs/spectra.md;
            ``"bottomk"``: through the sparse factors ``D_out (alpha S + U W)`` of units with
            ReLU masks, and compositions of them, else the operator),
            ``"operator"`` or ``"factors"``.
        dense_solver: dense route: ``"auto"`` (``svdvals`` up to 2048 rows/cols, else the Gram
            and ``eigvalsh``), ``"svd"`` or ``"gram"``.
        progress: progress bar while materializing dense matrices.

    Returns:
        a :class:`SpectrumResult`.

    Warns:
        UserWarning: an iterative run with ``k > min(n_out, n_in) / 8`` on an operator above
            ``EXACT_MAX`` values (before it starts: it can take very long).
        ConvergenceWarning: an iterative solver did not meet its tolerance, or missed copies
            of values the unit's structure fixes.

    Raises:
        TypeError: for a non-operator, bad dtype or a non-integer ``k``.
        ValueError: for an unknown method/route/solver, ``k`` out of ``1..min(n_out, n_in)``,
            or ``route="structured"`` on an operator without the structure.
    """
    check_op(op)
    with timed("spectrum", method=method, n=int(min(op.shape))) as info:
        res = _spectrum(
            op,
            method,
            k=k,
            vectors=vectors,
            dtype=dtype,
            route=route,
            solver=solver,
            tol=tol,
            max_iter=max_iter,
            block_size=block_size,
            ncv=ncv,
            seed=seed,
            products=products,
            dense_solver=dense_solver,
            progress=progress,
        )
        info.update(route=res.route, dtype=str(res.dtype).replace("torch.", ""), parts=dict(res.timings))
    return res


def _spectrum(
    op: LinearOperator,
    method: str,
    *,
    k: int | None,
    vectors: bool,
    dtype: torch.dtype | None,
    route: str,
    solver: str,
    tol: float | None,
    max_iter: int | None,
    block_size: int | None,
    ncv: int | None,
    seed: int,
    products: str,
    dense_solver: str,
    progress: bool,
) -> SpectrumResult:
    check_dtype(dtype)
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
            k = check_k(k, n_vals, method)
        return _exact(
            op,
            k,
            True,
            vectors=vectors,
            dtype=dtype or torch.float64,
            route=route,
            dense_solver=dense_solver,
            progress=progress,
        )
    # iterative
    if k is None:
        raise ValueError(f"method={method!r} needs k (1..{n_vals})")
    k = check_k(k, n_vals, method)
    if dtype is not None and dtype != op.dtype:
        raise TypeError(
            f"method={method!r} computes with the operator's products in {op.dtype}; got "
            f"dtype={dtype}. Linearize in {dtype} (net.linearize(x, dtype=...)) instead."
        )
    eps = torch.finfo(op.dtype).eps
    tol = check_tol(tol if tol is not None else (1e-8 if op.dtype == torch.float64 else 1e-4))
    largest = method == "topk"
    if products not in ("auto", "operator", "factors"):
        raise ValueError(f"products must be 'auto', 'operator' or 'factors', got {products!r}")
    scipy_solver = solver in ("arpack", "propack", "lobpcg")
    seed = check_seed(
        seed,
        SCIPY_SEED_RANGE if scipy_solver else SEED_RANGE,
        f" for solver={solver!r}" if scipy_solver else "",
    )
    for name, v in (("block_size", block_size), ("ncv", ncv)):
        check_int(name, v, optional=True)
    max_iter = check_int("max_iter", max_iter, optional=True)
    if solver == "propack" and max_iter is not None and max_iter < k:
        raise ValueError(
            "solver='propack' needs max_iter >= k (its Krylov basis size kmax), "
            f"got max_iter={max_iter}, k={k}"
        )
    large_k = k * AUTO_EXACT_FRACTION > n_vals
    if solver == "auto" and n_vals <= EXACT_MAX and (large_k or n_vals <= AUTO_EXACT_SMALL):
        why = (
            f"k={k} > min(n_out, n_in)/{AUTO_EXACT_FRACTION} = {n_vals / AUTO_EXACT_FRACTION:g}: all "
            f"{n_vals} values (at most EXACT_MAX = {EXACT_MAX}) cost less than a Krylov basis of ~3k vectors"
            if large_k
            else f"min(n_out, n_in) = {n_vals} <= {AUTO_EXACT_SMALL}: the exact spectrum is cheap"
        )
        res = _exact(
            op,
            k,
            largest,
            vectors=vectors,
            dtype=torch.float64,
            route=route,
            dense_solver=dense_solver,
            progress=progress,
        )
        # float64 linear algebra as method="exact" (a float32 Gram would lose the small values
        # bottomk asks for), returned in the operator's dtype like the iterative results
        res.values = res.values.to(op.dtype)
        if res.U is not None:
            res.U, res.V = res.U.to(op.dtype), res.V.to(op.dtype)
        res.dtype, res.method = op.dtype, method
        res.info["why_exact"] = why
        return res
    if large_k and n_vals > EXACT_MAX:
        warnings.warn(
            f"{method} k={k} of min(n_out, n_in) = {n_vals} values (more than 1/{AUTO_EXACT_FRACTION}) runs "
            f"{'block-krylov' if solver == 'auto' else solver} on a basis of ~3k vectors of length "
            f"{n_vals}: this can take very long. Use a smaller k, or method='exact' (all values; "
            f"above EXACT_MAX = {EXACT_MAX} values solver='auto' does not take it by itself: "
            "it can need O(n^2) memory)",
            UserWarning,
            stacklevel=3,
        )
    t_f = time.perf_counter()
    work = op
    if products == "factors" or (products == "auto" and not largest):
        fop = factor_operator(op)
        if fop is None and products == "factors":
            raise ValueError("products='factors' needs unit Jacobians with ReLU masks")
        work = fop or op
    t_f = time.perf_counter() - t_f
    ex = exact_parts(op)  # the structure's exact facts: active rows, and the result's check below
    if solver in ("auto", "block-krylov"):
        max_iter = max_iter if max_iter is not None else (60 if largest else 300)
        # with single-threaded sparse products on the CPU, the Krylov method's small dense
        # operations are fastest single-threaded (no OpenMP synchronisation per tiny op)
        single = work is not op and work.device.type == "cpu"
        # top-k: iterate on the active rows only (exact zero rows of ReLU-masked units carry no
        # nonzero singular value); shorter vectors make the orthogonalization cheaper
        rows = None
        if largest:
            if ex.side == "left" and ex.support is not None and ex.n_probe_space >= 2 * k + 16:
                if ex.n_probe_space < min(op.shape):
                    rows = RowSubset(work, ex.support)
        with torch_threads(1 if single else None):
            res = block_krylov(
                rows if rows is not None else work,
                k,
                largest,
                block=block_size,
                ncv=ncv,
                tol=max(float(tol), 10 * eps),
                max_iter=int(max_iter),
                seed=seed,
                vectors=vectors,
            )
        if rows is not None:
            if res.U is not None:
                res.U = rows.expand(res.U)
            res.info["active_rows"] = int(rows.shape[0])
    else:
        if solver in ("arpack", "lobpcg") and k >= n_vals:
            raise ValueError(f"solver={solver!r} needs k < min(n_out, n_in) = {n_vals}, got {k}")
        res = scipy_svds(work, k, largest, solver, float(tol), max_iter, seed, vectors)
    res.shape = op.shape
    res.info["products_via"] = "sparse-factors" if work is not op else "operator"
    missing = _missing_exact_values(ex, res, largest, eps)
    if missing:
        res.converged = False
        res.info["missing_exact_values"] = missing
        warnings.warn(
            f"{res.route} {method} k={k} missed copies of a repeated singular value: {missing} "
            "(a Krylov method finds at most block_size copies of one value); use method='exact', "
            "or the counts n_exact_ones / n_zero_structural of the exact routes",
            ConvergenceWarning,
            stacklevel=3,
        )
    if work is not op:
        res.timings["factors"] = t_f
        res.timings["total"] = res.timings.get("total", 0.0) + t_f
    if not res.converged and not missing:
        has_res = res.residuals is not None and res.residuals.numel() > 0
        worst = float(res.residuals.max()) if has_res else math.nan
        warnings.warn(
            f"{res.route} did not reach tol={tol:g} for {method} k={k} "
            f"(iterations {res.iterations}, max residual {worst:.3g}, largest value "
            f"{float(res.values.max()) if res.values.numel() else math.nan:.4g}"
            f"{'; ' + str(res.info['error']) if res.info.get('error') else ''}); "
            "increase max_iter or block_size",
            ConvergenceWarning,
            stacklevel=3,
        )
    return res


def _exact(
    op: LinearOperator,
    k: int | None,
    largest: bool,
    *,
    vectors: bool,
    dtype: torch.dtype,
    route: str,
    dense_solver: str,
    progress: bool,
) -> SpectrumResult:
    """All singular values by an exact route (``route``, as in :func:`spectrum`), sliced to the
    ``k`` largest (``largest``) or the ``k`` smallest (descending, as the iterative
    ``"bottomk"``); ``k=None`` keeps all.
    """
    ok, why = structured_plan(op)
    if route == "structured" and not ok:
        raise ValueError(f"no structured reduction for this operator: {why}")
    if vectors:
        res = dense_spectrum(op, dtype, True, dense_solver, progress)
    elif route in ("auto", "structured") and ok:
        # "auto": the fastest exact values (a rank-deficient unit may take the m x m Gram);
        # "structured": the reduction, with the count of values exactly |alpha|
        res = structured_spectrum(op, dtype, exact_ones=route == "structured")
    elif route == "gram" or (route == "auto" and factor_plan(op)[0] is not None):
        if factor_plan(op)[0] is None:
            raise ValueError(f"route='gram' needs a unit with ReLU masks: {factor_plan(op)[1]}")
        res = gram_spectrum(op, dtype)
    else:
        res = dense_spectrum(op, dtype, False, dense_solver, progress)
    if not ok and route == "auto":
        res.info.setdefault("why_not_structured", why)
    if k is not None:
        keep = slice(None, k) if largest else slice(res.values.numel() - k, None)
        res.values = res.values[keep]
        if res.U is not None:
            res.U, res.V = res.U[:, keep], res.V[:, keep]
    return res


def _missing_exact_values(ex, res: SpectrumResult, largest: bool, eps: float) -> str:
    """Check an iterative result against the values the operator's structure fixes exactly
    (``ex``, its :func:`~linstab.linalg.exact_parts`): ``n_structural_zero`` zeros and at least
    ``n_exact_plateau`` values equal to ``|alpha|``. Returns a description of what is missing
    ("" when consistent).
    """
    v = res.values.detach().to(torch.float64).cpu()
    if v.numel() == 0 or not bool(torch.isfinite(v).all()):
        return ""
    cut = 100 * math.sqrt(eps) * max(float(v.max()), 1.0)  # computed zeros: ~sqrt(eps) |J|
    out = []
    if not largest and ex.n_structural_zero:
        want = min(v.numel(), ex.n_structural_zero)
        got = int((v <= cut).sum())
        if got < want:
            out.append(f"{got} of the {want} zeros the ReLU output mask fixes among the {v.numel()} values")
    a, count = ex.plateau_value, ex.n_exact_plateau
    if a is not None and count:
        past = float(v.min()) < a - cut if largest else float(v.max()) > a + cut
        got = int(((v - a).abs() <= cut).sum())
        if past and got < count:
            out.append(f"{got} of the at least {count} values exactly {a:g} the unit's structure fixes")
    return "; ".join(out)
