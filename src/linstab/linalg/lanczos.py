"""Batched Lanczos on the Gram operator ``J^T J`` (or ``J J^T``) of a matrix-free operator.

``B`` probes run their own (independent, not block) Lanczos recurrences side by side: every
step is one batched product ``J (.)`` and one batched adjoint product ``J^T (.)`` on all ``B``
vectors at once. Vectors live on the operator's device in its dtype; no value is copied to
the host inside the iteration (breakdowns are handled with masks) except at a few check points
(16, 32, 64, ... steps), where a stop rule is asked and non-finite coefficients end the run.
The recurrence coefficients (``(B, k)`` numbers) are returned in float64 on the CPU.

Shapes: the Gram space has dimension ``dim`` (``n_in`` for ``side="right"``, i.e. ``J^T J``,
``n_out`` for ``side="left"``, i.e. ``J J^T``); a block of vectors is ``(dim, B)`` (columns, as
in :meth:`linstab.operators.LinearOperator.matmat`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..io.validate import check_int
from ..operators import LinearOperator

__all__ = ["LanczosResult", "lanczos", "gram_operator", "REORTH", "SIDES"]

REORTH = ("full", "selective", "none")
SIDES = ("right", "left")


@dataclass
class LanczosResult:
    """Recurrence coefficients of ``B`` independent Lanczos runs on a Gram operator ``A``.

    Run ``b`` builds the Jacobi (tridiagonal) matrix ``T_b`` with diagonal
    ``alpha[b, :lengths[b]]`` and off-diagonal ``beta[b, :lengths[b] - 1]``; ``beta[b, k - 1]``
    (for ``lengths[b] == k``) is the norm of the last residual, which the Gauss-Radau rules
    need. A run that found an invariant subspace (``beta`` at rounding level) stops early:
    ``lengths[b] < steps`` and its Gauss quadrature is exact for the probe's spectral measure.

    Attributes:
        alpha: diagonal coefficients, ``(B, steps)`` float64 (CPU); zero after a breakdown.
        beta: off-diagonal coefficients, ``(B, steps)`` float64 (CPU); zero from a breakdown on.
        start_norm: Euclidean norms of the start vectors, ``(B,)`` float64 (CPU).
        lengths: steps each run completed before a breakdown, ``(B,)`` int64 (``steps`` when
            none; 0 for a zero start vector).
        steps: the requested number of steps ``k``.
        side: ``"right"`` (``A = J^T J``) or ``"left"`` (``A = J J^T``).
        reorth: the reorthogonalization used (see :func:`lanczos`).
        dim: dimension of the Gram space.
        n_support: number of coordinates the iteration was restricted to (``dim`` if none).
        basis: the Lanczos vectors ``(steps, dim, B)`` when requested (``reorth="full"``
            only), else ``None``.
        timings: seconds (``"total"``).
    """

    alpha: torch.Tensor
    beta: torch.Tensor
    start_norm: torch.Tensor
    lengths: torch.Tensor
    steps: int
    side: str
    reorth: str
    dim: int
    n_support: int
    basis: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_probes(self) -> int:
        """Number of runs ``B``."""
        return int(self.alpha.shape[0])

    def tridiagonal(self, b: int) -> torch.Tensor:
        """The dense Jacobi matrix ``T_b``, ``(lengths[b], lengths[b])`` float64."""
        k = int(self.lengths[b])
        T = torch.diag(self.alpha[b, :k])
        if k > 1:
            e = self.beta[b, : k - 1]
            T = T + torch.diag(e, 1) + torch.diag(e, -1)
        return T


def _check_op(op) -> None:
    if not isinstance(op, LinearOperator):
        raise TypeError(f"expected a linstab LinearOperator (e.g. lin.unit(1, 5)), got {type(op).__name__}")
    if op.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the operator must compute in float32 or float64, got {op.dtype}")


def gram_operator(op: LinearOperator, side: str = "right", support: torch.Tensor | None = None):
    """The Gram product ``X -> A X`` on row batches, with ``A = J^T J`` or ``J J^T``.

    Args:
        op: the operator ``J`` (``n_out x n_in``).
        side: ``"right"`` (``A = J^T J``, ``dim = n_in``) or ``"left"`` (``A = J J^T``,
            ``dim = n_out``).
        support: optional boolean ``(dim,)`` mask; ``A`` is then ``P A P`` with ``P`` the
            coordinate projector onto the mask.

    Returns:
        ``(gram, dim)``: ``gram`` maps a ``(B, dim)`` tensor to ``(B, dim)`` (rows are vectors;
        two batched operator products per call).
    """
    _check_op(op)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    n_out, n_in = op.shape
    if side == "right":
        dim, first, second = n_in, (op.matmat_batch, op.in_shape), (op.rmatmat_batch, op.out_shape)
    else:
        dim, first, second = n_out, (op.rmatmat_batch, op.out_shape), (op.matmat_batch, op.in_shape)
    mask = None
    if support is not None:
        if support.shape != (dim,) or support.dtype != torch.bool:
            raise ValueError(
                f"support must be a boolean tensor of shape ({dim},), got {support.dtype} "
                f"{tuple(support.shape)}"
            )
        mask = support.to(device=op.device, dtype=op.dtype)

    def gram(X: torch.Tensor) -> torch.Tensor:
        b = X.shape[0]
        Y = first[0](X.reshape(b, *first[1]))
        Z = second[0](Y.reshape(b, *second[1])).reshape(b, dim)
        return Z * mask if mask is not None else Z

    return gram, dim


def lanczos(
    op: LinearOperator,
    start: torch.Tensor,
    steps: int,
    *,
    side: str = "right",
    reorth: str = "none",
    support: torch.Tensor | None = None,
    locked: torch.Tensor | None = None,
    return_basis: bool = False,
    stop: Callable[[LanczosResult], bool] | None = None,
    check_at=None,
) -> LanczosResult:
    """``B`` independent Lanczos recurrences on ``A = J^T J`` (or ``J J^T``), run together.

    Each step costs one batched ``J`` product and one batched ``J^T`` product on ``B`` vectors.
    Memory is ``O(dim B)`` for ``reorth="none"``/``"selective"`` (three vectors per probe plus
    the locked vectors) and ``O(dim B steps)`` for ``"full"``.

    Reorthogonalization:

    * ``"none"``: the three-term recurrence with one local re-orthogonalization against the two
      previous vectors. Orthogonality is lost once Ritz values converge, which duplicates them
      ("ghosts") but, by Greenbaum's analysis, the computed Jacobi matrix is the exact one of a
      measure whose atoms are split into tiny clusters around the true eigenvalues: quadrature
      (SLQ) stays valid. The default for spectral densities and band counts.
    * ``"selective"``: as ``"none"`` plus orthogonalization of every new vector against the
      columns of ``locked`` (orthonormal, shared by all probes; e.g. converged top singular
      vectors from :func:`linstab.spectra.spectrum` with ``method="topk", vectors=True``: those
      are the directions in which Lanczos loses orthogonality first, as in Parlett & Scott's
      selective orthogonalization). The iteration then runs on ``A`` restricted to the
      orthogonal complement of ``span(locked)``; the start vectors are projected too.
    * ``"full"``: classical Gram-Schmidt, twice, against all previous Lanczos vectors of the
      same probe (and ``locked`` if given).

    Args:
        op: the operator ``J``.
        start: start vectors as columns, ``(dim, B)`` in the operator's dtype (any device; moved
            to the operator's). Zero columns give runs of length 0.
        steps: number of Lanczos steps ``k >= 1`` (capped at the dimension of the space).
        side: ``"right"`` (``A = J^T J`` on ``n_in``) or ``"left"`` (``A = J J^T`` on ``n_out``).
        reorth: ``"none"``, ``"selective"`` or ``"full"`` (see above).
        support: optional boolean ``(dim,)`` mask restricting ``A`` to those coordinates
            (``P A P``); start vectors are masked.
        locked: ``(dim, L)`` orthonormal columns to orthogonalize against (required for
            ``"selective"``, optional for ``"full"``).
        return_basis: keep the Lanczos vectors (``reorth="full"`` only).
        stop: optional rule for ending early: called with the :class:`LanczosResult` of the
            steps so far after each step count in ``check_at``; the iteration ends when it
            returns ``True`` (``steps`` is then the count reached).
        check_at: step counts at which ``stop`` is asked and the coefficients so far are checked
            for NaN/Inf (default: 16, 32, 64, ..., doubling). These checks are the only host
            round trips of the iteration: an operator that returns NaN fails there, not after
            all ``steps`` products.

    Returns:
        a :class:`LanczosResult`.

    Raises:
        TypeError: ``op`` is not a :class:`~linstab.operators.LinearOperator`, ``start`` is not
            a tensor of the operator's dtype, or ``steps`` is not an int.
        ValueError: bad shapes, ``steps < 1``, an unknown ``side``/``reorth``, or non-finite
            numbers from the operator (NaN/Inf in ``J v`` or ``J^T w``).
    """
    t0 = time.perf_counter()
    _check_op(op)
    steps = check_int("steps", steps)
    if reorth not in REORTH:
        raise ValueError(f"reorth must be one of {REORTH}, got {reorth!r}")
    gram, dim = gram_operator(op, side, support)
    if not isinstance(start, torch.Tensor):
        raise TypeError(f"start must be a torch.Tensor (dim, B), got {type(start).__name__}")
    if start.dtype != op.dtype:
        raise TypeError(f"start has dtype {start.dtype}; the operator computes in {op.dtype}")
    if start.ndim != 2 or start.shape[0] != dim or start.shape[1] < 1:
        raise ValueError(f"start must have shape ({dim}, B) with B >= 1, got {tuple(start.shape)}")
    if reorth == "selective" and locked is None:
        raise ValueError("reorth='selective' needs locked vectors (dim, L) to orthogonalize against")
    if return_basis and reorth != "full":
        raise ValueError("return_basis=True needs reorth='full' (other modes keep no basis)")
    dev, dtype = op.device, op.dtype
    L = None
    if locked is not None:
        if not isinstance(locked, torch.Tensor) or locked.ndim != 2 or locked.shape[0] != dim:
            got = tuple(locked.shape) if isinstance(locked, torch.Tensor) else type(locked).__name__
            raise ValueError(f"locked must be a tensor of shape ({dim}, L), got {got}")
        L = locked.to(device=dev, dtype=dtype)
        if support is not None:
            L = L * support.to(device=dev, dtype=dtype)[:, None]
    n_support = dim if support is None else int(support.sum())
    k = min(steps, max(n_support - (0 if L is None else L.shape[1]), 1))
    B = start.shape[1]
    checks = _check_points(check_at, k)
    eps = torch.finfo(dtype).eps
    tol = 100 * eps

    X = start.to(dev).T.contiguous()  # (B, dim): rows are vectors
    if support is not None:
        X = X * support.to(device=dev, dtype=dtype)
    if L is not None:
        for _ in range(2):
            X = X - (X @ L) @ L.T
    nrm = X.norm(dim=1)
    alive = nrm > 0
    q = torch.where(alive[:, None], X / torch.where(alive, nrm, torch.ones_like(nrm))[:, None], 0.0)
    q_prev = torch.zeros_like(q)
    b_prev = torch.zeros(B, dtype=dtype, device=dev)
    anorm = torch.zeros(B, dtype=dtype, device=dev)
    A_ = torch.zeros((k, B), dtype=dtype, device=dev)
    B_ = torch.zeros((k, B), dtype=dtype, device=dev)
    basis = torch.empty((k, B, dim), dtype=dtype, device=dev) if reorth == "full" else None
    for j in range(k):
        if basis is not None:
            basis[j] = q
        w = gram(q)
        a = (q * w).sum(dim=1)
        w = w - a[:, None] * q - b_prev[:, None] * q_prev
        if basis is not None:
            Qj = basis[: j + 1]
            for _ in range(2):
                h = torch.einsum("jbd,bd->jb", Qj, w)
                w = w - torch.einsum("jbd,jb->bd", Qj, h)
                a = a + h[j]
        else:
            c = (q * w).sum(dim=1)
            c_prev = (q_prev * w).sum(dim=1)
            w = w - c[:, None] * q - c_prev[:, None] * q_prev
            a = a + c
        if L is not None:
            w = w - (w @ L) @ L.T
        b = w.norm(dim=1)
        anorm = torch.maximum(anorm, a.abs() + b + b_prev)
        ok = b > tol * anorm
        b = torch.where(ok, b, torch.zeros_like(b))
        q_prev = q
        q = torch.where(ok[:, None], w / torch.where(ok, b, torch.ones_like(b))[:, None], 0.0)
        A_[j] = a
        B_[j] = b
        b_prev = b
        if j + 1 < k and (j + 1) in checks:
            if stop is None:
                _check_finite(A_[: j + 1], B_[: j + 1])
            elif stop(_result(A_[: j + 1], B_[: j + 1], X, side, reorth, dim, n_support, None, t0)):
                k = j + 1
                break
    res = _result(A_[:k], B_[:k], X, side, reorth, dim, n_support, basis[:k] if return_basis else None, t0)
    return res


def _check_points(check_at, k: int) -> set[int]:
    if check_at is None:
        out, c = set(), 16
        while c < k:
            out.add(c)
            c *= 2
        return out
    try:
        pts = {int(c) for c in check_at}
    except (TypeError, ValueError):
        raise TypeError(f"check_at must be an iterable of step counts, got {check_at!r}") from None
    if any(c < 1 for c in pts):
        raise ValueError(f"check_at must hold step counts >= 1, got {sorted(pts)}")
    return pts


def _check_finite(A_: torch.Tensor, B_: torch.Tensor) -> None:
    """Raise ``ValueError`` if the coefficients so far hold a NaN or an Inf."""
    if not bool(torch.isfinite(A_).all()) or not bool(torch.isfinite(B_).all()):
        raise ValueError(
            f"the operator returned non-finite values (NaN or Inf) during Lanczos (within the "
            f"first {A_.shape[0]} steps): check the operator (e.g. the linearization point or its weights)"
        )


def _result(A_, B_, X, side, reorth, dim, n_support, basis, t0) -> LanczosResult:
    """The :class:`LanczosResult` of the coefficients ``A_``, ``B_`` (``(k, B)``, device)."""
    k, B = A_.shape
    _check_finite(A_, B_)
    alpha = A_.T.to(device="cpu", dtype=torch.float64)
    beta = B_.T.to(device="cpu", dtype=torch.float64)
    # the squared start norms are the total masses of the probes' spectral measures: summed in
    # float64 (exact for +-1 probes) rather than taken from the working-precision norm
    start_norm = X.to(torch.float64).pow(2).sum(dim=1).sqrt().to(device="cpu")
    # a run has length j + 1 when beta[j] == 0 (breakdown after step j); 0 for a zero start
    lengths = torch.full((B,), k, dtype=torch.int64)
    zero_b = beta == 0
    if bool(zero_b.any()):
        first = torch.where(zero_b.any(dim=1), zero_b.float().argmax(dim=1) + 1, torch.full((B,), k))
        lengths = first.to(torch.int64)
    lengths = torch.where(start_norm > 0, lengths, torch.zeros_like(lengths))
    return LanczosResult(
        alpha=alpha,
        beta=beta,
        start_norm=start_norm,
        lengths=lengths,
        steps=k,
        side=side,
        reorth=reorth,
        dim=dim,
        n_support=n_support,
        basis=basis.permute(0, 2, 1) if basis is not None else None,
        timings={"total": time.perf_counter() - t0},
    )
