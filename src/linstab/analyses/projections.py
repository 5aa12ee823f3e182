"""Right singular vectors of unit Jacobians, projections of incoming perturbations on them and
the eq. (1) predictions of the growth.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from ..linalg.dense_svd import svd
from ..spectra.spectrum import spectrum


@dataclass
class RightSingular:
    """Leading right singular vectors of an operator.

    Attributes:
        values: ``(m,)`` singular values, descending.
        V: ``(n_in, m)`` right singular vectors as columns.
        complete: the vectors span the row space (the rest of the input space is the null
            space): eq. (1) over them is exact.
        method: ``"exact"`` (dense SVD) or ``"topk"`` (iterative).
        tail_bound: an upper bound on the singular values outside ``values`` (0 if complete):
            the smallest computed value.
        converged: the iterative solver met its tolerance (always ``True`` for ``"exact"``).
    """

    values: torch.Tensor
    V: torch.Tensor
    complete: bool
    method: str
    tail_bound: float
    converged: bool = True
    _source: object = field(default=None, repr=False, compare=False)


def right_singular(op, k: int | None = None, *, seed: int = 0) -> RightSingular:
    """Right singular vectors of a unit Jacobian: all (``k=None``) or the top ``k``.

    All vectors come from a dense float64 SVD (practical up to n_in ~ 4096 on a CPU); ``k``
    uses the iterative top-k solver of :mod:`linstab.spectra` (the operator's dtype; linearize
    in float64 for accurate vectors). When
    ``k >= min(n_in, n_out)`` the dense SVD is used.

    Every result is checked: ``V`` orthonormal and ``||J v_i|| = s_i`` (relative to ``s_1``,
    1e-6 in float64, 1e-3 in float32). A result failing the check is replaced by linstab's
    internal solver (dense SVD for small operators, else randomized block Krylov), with a
    warning, and marked ``method="topk-fallback"``/``"exact-fallback"``.

    Args:
        op: a :class:`~linstab.operators.LinearOperator`.
        k: number of leading vectors (``None``: all).
        seed: seed of the iterative method's start block.

    Raises:
        ValueError: for ``k < 1``.
    """
    n_out, n_in = op.shape
    rank = min(n_out, n_in)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k: expected a positive int or None (all), got {k!r}")
    exact = k is None or k >= rank
    kk = None if exact else k
    method = "exact" if exact else "topk"
    try:
        values, V, conv = _right_singular(op, kk, seed=seed)
        err = _pair_error(op, values, V)
    except (RuntimeError, ValueError, TypeError) as exc:  # a solver failure: use the fallback
        values, V, conv, err = None, None, False, f"{type(exc).__name__}: {exc}"
    tol = 1e-6 if op.dtype == torch.float64 else 1e-3
    if isinstance(err, str) or err > tol:
        why = err if isinstance(err, str) else f"max | ||J v_i|| - s_i | / s_1 = {err:.2e}"
        warnings.warn(
            f"singular vectors of {op.label or 'operator'} failed the check ({why}); "
            "using linstab's internal solver",
            RuntimeWarning,
            stacklevel=2,
        )
        values, V = _fallback_right(op, kk, seed=seed)
        conv, method = True, method + "-fallback"
    if exact:
        return RightSingular(
            values, V, complete=True, method=method, tail_bound=0.0, converged=conv, _source=op
        )
    return RightSingular(
        values, V, complete=False, method=method, tail_bound=float(values[-1]), converged=conv, _source=op
    )


MATCH_CHECK = 4  # leading pairs re-checked when vectors meet an operator they were not computed for
MATCH_RTOL = 1e-2  # relative to s_1: loose enough for float32 twins of the same Jacobian


def _check_match(op, spectrum: RightSingular) -> None:
    """Refuse singular vectors that do not belong to ``op``: a wrong input size, or (for vectors
    computed on another operator object) leading pairs with ``||J v_i||`` away from ``s_i``.
    """
    V = spectrum.V
    n_in = op.shape[1]
    if V.ndim != 2 or V.shape[0] != n_in or V.shape[1] != spectrum.values.numel():
        raise ValueError(
            f"spectrum: expected right singular vectors of this unit, V of shape ({n_in}, m) with m = "
            f"len(values); got V of shape {tuple(V.shape)} and {spectrum.values.numel()} values "
            "(vectors of another unit?)"
        )
    if spectrum._source is op or V.shape[1] == 0:
        return
    c = min(MATCH_CHECK, V.shape[1])
    got = _image_norms(op, V[:, :c])
    want = spectrum.values[:c].to(torch.float64)
    scale = max(float(want[0]), 1e-300)
    err = float((got - want).abs().max()) / scale
    if not math.isfinite(err) or err > MATCH_RTOL:
        raise ValueError(
            "spectrum: the singular vectors do not belong to this unit's Jacobian (max | ||J v_i|| - s_i "
            f"| / s_1 = {err:.2e} over the top {c}, tolerance {MATCH_RTOL:g}); compute them with "
            "right_singular(op) of the same unit at the same image"
        )


def _right_singular(op, k: int | None, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(values (m,), V (n_in, m), converged)``, descending; ``k=None``: all (dense SVD).

    The single switch point to the singular value solver (:func:`linstab.spectra.spectrum`:
    dense SVD for ``"exact"``, restarted block Krylov to a 1e-8 relative residual in float64
    for ``"topk"``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is judged by _pair_error instead
        if k is None:
            res = spectrum(op, "exact", vectors=True)
        else:
            res = spectrum(op, "topk", k=k, vectors=True, seed=seed)
    return res.values.to(torch.float64), res.V.to(torch.float64), bool(res.converged)


def _pair_error(op, values: torch.Tensor, V: torch.Tensor) -> float:
    """``max(||V^T V - I||_max, max_i | ||J v_i|| - s_i | / s_1)`` (one batched product)."""
    if V is None or V.ndim != 2 or V.shape[0] != op.shape[1] or V.shape[1] != values.numel():
        return math.inf
    if values.numel() > 1 and bool((values[1:] > values[:-1] * (1 + 1e-12) + 1e-300).any()):
        return math.inf
    s1 = float(values[0]) if values.numel() else 0.0
    if not math.isfinite(s1) or s1 <= 0:
        return math.inf
    orth = float((V.T @ V - torch.eye(V.shape[1], dtype=V.dtype)).abs().max())
    return max(orth, float((_image_norms(op, V) - values).abs().max()) / s1)


def _image_norms(op, V: torch.Tensor) -> torch.Tensor:
    """``(c,)`` float64 ``||J v_i||`` of the columns of ``V`` ``(n_in, c)``, in one batched product."""
    c = V.shape[1]
    JV = op.matmat_batch(V.T.reshape(c, *op.in_shape).to(op.dtype)).reshape(c, -1)
    return JV.to(torch.float64).norm(dim=1)


DENSE_FALLBACK_MAX = 4096  # a failed check is redone by a dense SVD up to this many values


def _fallback_right(op, k: int | None, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Second attempt after a result failed the check, in float64: a dense SVD when all vectors
    are asked for or the operator is small, else the block Krylov solver again from another
    start block with a tighter tolerance and more restarts. Returns ``(values, V)``.
    """
    n_out, n_in = op.shape
    if k is None or min(n_out, n_in) <= DENSE_FALLBACK_MAX:
        _, S, Vh = svd(op.materialize(torch.float64))
        m = S.numel() if k is None else k
        return S[:m], Vh[:m].T.contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spectrum(op, "topk", k=k, vectors=True, seed=seed + 1, tol=1e-10, max_iter=600)
    return res.values.to(torch.float64), res.V.to(torch.float64)


@dataclass
class UnitPrediction:
    """Linear predictions of ``||J dx||`` for one incoming perturbation ``dx``.

    Attributes:
        in_norm: ``||dx||``.
        lin_pred: the exact linear prediction ``||J dx||``.
        eq1: ``sqrt(sum_i alpha_i^2 s_i^2)`` over the computed vectors (``nan`` without them).
        eq1_upper: ``sqrt(eq1^2 + tail_bound^2 * remainder^2)`` (equals ``eq1`` when complete).
        captured: ``sum_i alpha_i^2 / ||dx||^2`` over the computed vectors.
        align10: the same over the top 10 (``nan`` when fewer than 10 were computed and the
            set is not complete).
        n_vectors: number of vectors used.
        spectrum: ``"exact"``, ``"topk"`` or ``""``.
        alpha: ``(m,)`` the coefficients ``<dx, v_i>`` (``None`` without vectors).
        sigma: ``(m,)`` the singular values.
    """

    in_norm: float
    lin_pred: float
    eq1: float = math.nan
    eq1_upper: float = math.nan
    captured: float = math.nan
    align10: float = math.nan
    n_vectors: int = 0
    spectrum: str = ""
    alpha: torch.Tensor | None = field(default=None, repr=False)
    sigma: torch.Tensor | None = field(default=None, repr=False)


def predict_unit(op, dx: torch.Tensor, spectrum: RightSingular | None = None) -> UnitPrediction:
    """Exact linear prediction ``||J dx||`` and, with singular vectors, eq. (1) with its bounds.

    Args:
        op: the unit's Jacobian at the clean image.
        dx: ``(*in_shape)`` the perturbation entering the unit.
        spectrum: right singular vectors of ``op`` (see :func:`right_singular`).

    Raises:
        TypeError: ``dx`` not a floating-point tensor.
        ValueError: ``dx`` with another number of entries than the unit's input, or a
            ``spectrum`` that is not of ``op`` (wrong size, or its leading pairs do not satisfy
            ``||J v_i|| = s_i``).
    """
    if not isinstance(dx, torch.Tensor) or not dx.is_floating_point():
        got = f"a {dx.dtype} tensor" if isinstance(dx, torch.Tensor) else type(dx).__name__
        raise TypeError(f"dx must be a floating-point tensor, got {got}")
    if dx.numel() != math.prod(op.in_shape):
        raise ValueError(
            f"dx must have the unit's input shape {tuple(op.in_shape)} ({math.prod(op.in_shape)} "
            f"entries); got shape {tuple(dx.shape)}"
        )
    if spectrum is not None:
        if not isinstance(spectrum, RightSingular):
            got = type(spectrum).__name__
            raise TypeError(f"spectrum: expected a RightSingular (from right_singular), got {got}")
        _check_match(op, spectrum)
    dx = dx.reshape(op.in_shape)
    jdx = op @ dx.to(op.dtype)
    v = dx.reshape(-1).to(torch.float64)
    n2 = float(v @ v)
    out = UnitPrediction(in_norm=math.sqrt(n2), lin_pred=float(jdx.double().norm()))
    if spectrum is None:
        return out
    alpha = spectrum.V.T @ v
    s = spectrum.values
    a2 = alpha**2
    main2 = float((a2 * s**2).sum())
    cap2 = float(a2.sum())
    rem2 = max(n2 - cap2, 0.0)
    out.eq1 = math.sqrt(main2)
    out.eq1_upper = math.sqrt(main2 + spectrum.tail_bound**2 * rem2)
    out.captured = cap2 / n2 if n2 > 0 else math.nan
    if alpha.numel() >= 10 or spectrum.complete:
        out.align10 = float(a2[:10].sum()) / n2 if n2 > 0 else math.nan
    out.n_vectors = int(alpha.numel())
    out.spectrum = spectrum.method
    out.alpha = alpha
    out.sigma = s
    return out
