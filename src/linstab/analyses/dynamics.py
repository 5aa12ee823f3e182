"""Dynamics beyond the paper: eigenvalues of unit Jacobians and local Lyapunov spectra.

Eigenvalues (square units only, i.e. units whose input and output shapes agree)
--------------------------------------------------------------------------------
For a unit with identity shortcut, ``J = D (alpha I + A_post E_T E_T^T A_pre)`` where ``D`` is
the 0/1 outer ReLU mask with ``m`` active outputs ``S``, ``T`` the ``r`` active units of the
narrowest masked inner layer, ``A_pre`` the body up to that layer and ``A_post`` the rest. In
the basis (active outputs, inactive outputs) ``J`` is block upper triangular with a zero
diagonal block, so its eigenvalues are ``0`` (``n - m`` times) and those of
``J_SS = alpha I_m + U_S W_S`` (``U = A_post E_T``, ``W = E_T^T A_pre``). The non-zero
eigenvalues of ``U_S W_S`` (rank <= r) are those of the ``r x r`` matrix
``K = W D U = E_T^T A_pre D A_post E_T``. Hence

    eig(J) = {0}^(n - m)  U  {alpha}^(m - r)  U  {alpha + eig(K)}       (exact)

so an ``n = 16384`` unit needs one ``r x r`` (r ~ 4000) non-symmetric eigenproblem instead of
an ``n x n`` one. ``K`` is built column by column from impulses through the cached closed-form
pieces. Other square units (non-ReLU activations, conv shortcuts that keep the shape) use dense
``torch.linalg.eigvals``.

Local Lyapunov spectrum
-----------------------
The network is a discrete dynamical system ``x_{k+1} = F_k(x_k)``. Starting from a seeded random
orthonormal frame ``Q_0`` (``n_0 x k``) at the stem output, each unit maps ``Z = J_k Q_{k-1}``,
then ``Z = Q_k R_k`` (thin QR); ``log |R_k[i, i]|`` is the growth of direction ``i`` at unit
``k``. Down-sampling units change the dimension (``n_out < n_in``): the frame keeps its ``k``
columns, re-orthonormalized in the smaller output space (``k`` must not exceed the smallest
unit dimension). Over a stage, the summed log-growth of the top direction is a lower bound of
``log sigma_max`` of the stage operator (equality needs the frame to align with the top right
singular vector); linstab reports both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..io.validate import check_int
from ..network.linearization import Linearization
from ..operators.base import LinearOperator
from ..operators.closed_form import UnitJacobian
from ..operators.factors import factor_plan, structured_plan


@dataclass
class EigenResult:
    """Eigenvalues of a square unit Jacobian.

    Attributes:
        values: complex eigenvalues (numpy, ``n`` of them), sorted by decreasing modulus.
        spectral_radius: ``max |lambda|``.
        method: ``"structured"`` or ``"dense"``.
        n: dimension.
        n_zero_structural: eigenvalues exactly 0 from the outer mask (structured only).
        n_alpha_structural: eigenvalues exactly ``alpha`` from the rank bound (structured only).
        alpha: skip scale.
        seconds: wall time.
    """

    values: np.ndarray
    spectral_radius: float
    method: str
    n: int
    n_zero_structural: int | None
    n_alpha_structural: int | None
    alpha: float
    seconds: float


def unit_eigenvalues(op: LinearOperator, method: str = "auto", batch_size: int = 256) -> EigenResult:
    """All eigenvalues of a square unit Jacobian.

    Args:
        op: a square operator (``in_shape == out_shape``), typically ``lin.unit(s, k)``.
        method: ``"structured"`` (identity-shortcut ReLU units), ``"dense"`` or ``"auto"``.
        batch_size: impulses per block when building the reduced matrix.

    Raises:
        ValueError: for a non-square operator, a method that does not apply or a
            ``batch_size`` below 1.
        TypeError: ``batch_size`` is not an int.
    """
    import time

    if not isinstance(op, LinearOperator):
        raise TypeError(f"expected a LinearOperator, got {type(op).__name__}")
    if op.in_shape != op.out_shape:
        raise ValueError(
            f"eigenvalues need a square operator; this one maps {op.in_shape} -> {op.out_shape} "
            "(a down-sampling unit, or a stage across one)"
        )
    batch_size = check_int("batch_size", batch_size)
    if method not in ("auto", "structured", "dense"):
        raise ValueError(f"method must be 'auto', 'structured' or 'dense', got {method!r}")
    ok = structured_plan(op)[0] and op.out_deriv is not None
    if method == "structured" and not ok:
        raise ValueError("the structured reduction needs a closed-form ReLU unit with identity shortcut")
    t0 = time.perf_counter()
    n = op.shape[0]
    if method == "dense" or not ok:
        M = op.materialize(dtype=torch.float64)
        vals = torch.linalg.eigvals(M).numpy()
        nz = na = None
        used, alpha = "dense", float(getattr(op, "alpha", 1.0))
    else:
        assert isinstance(op, UnitJacobian)
        alpha = op.alpha
        li = factor_plan(op)[0]
        d_out = op.out_deriv
        m = int(d_out.sum())
        mask_t = op.blocks[li].deriv
        T = torch.nonzero(mask_t.reshape(-1)).reshape(-1)
        r = int(T.numel())
        inner_shape = tuple(mask_t.shape)

        def a_pre(V: torch.Tensor) -> torch.Tensor:
            for blk in op.blocks[: li + 1]:
                V = blk.conv(V)
                if blk.deriv is not None:
                    V = V * blk.deriv
            return V

        def a_post(V: torch.Tensor) -> torch.Tensor:
            for blk in op.blocks[li + 1 :]:
                V = blk.conv(V)
                if blk.deriv is not None:
                    V = V * blk.deriv
            return V

        S = torch.nonzero(d_out.reshape(-1)).reshape(-1)
        numel_inner = int(math.prod(inner_shape))

        def columns(idx_in: torch.Tensor, numel: int, shape, fn, idx_out: torch.Tensor) -> torch.Tensor:
            out = torch.empty((idx_out.numel(), idx_in.numel()), dtype=torch.float64)
            for s0 in range(0, idx_in.numel(), batch_size):
                idx = idx_in[s0 : s0 + batch_size]
                E = torch.zeros((idx.numel(), numel), dtype=op.dtype, device=op.device)
                E[torch.arange(idx.numel()), idx] = 1
                Z = fn(E.reshape(-1, *shape)).reshape(idx.numel(), -1)[:, idx_out]
                out[:, s0 : s0 + idx.numel()] = Z.T.to(torch.float64)
            return out

        if r <= m:
            # eig(U_S W_S) = eig(K) U {0}^(m - r), K = E_T^T A_pre D A_post E_T  (r x r)
            K = columns(T, numel_inner, inner_shape, lambda V: a_pre(a_post(V) * d_out), T)
            ev = torch.linalg.eigvals(K).numpy() + alpha if r else np.zeros(0, dtype=complex)
            ev = np.concatenate([ev, np.full(m - r, alpha, dtype=complex)])
        else:
            # fewer active outputs than inner units: the m x m block J_SS directly
            JSS = columns(S, n, op.in_shape, op.matmat_batch, S)
            ev = torch.linalg.eigvals(JSS).numpy()
        vals = np.concatenate([ev, np.zeros(n - m, dtype=complex)])
        nz, na, used = n - m, max(m - r, 0), "structured"
    order = np.argsort(-np.abs(vals), kind="stable")
    vals = vals[order]
    return EigenResult(
        values=vals,
        spectral_radius=float(np.abs(vals).max()) if vals.size else 0.0,
        method=used,
        n=n,
        n_zero_structural=nz,
        n_alpha_structural=na,
        alpha=alpha,
        seconds=time.perf_counter() - t0,
    )


@dataclass
class LyapunovResult:
    """Local Lyapunov spectrum along the network at one image.

    Attributes:
        units: unit addresses in order.
        log_growth: ``(n_units, k)`` array, ``log |R_kk|`` per unit and direction. A direction the
            unit annihilates exactly (``R_kk = 0``, e.g. ``k`` above the unit's rank) is floored at
            ``log(1e-300) = -690.8``; values below about ``log(eps |R_11|)`` are rounding.
        cumulative: ``(n_units, k)`` cumulative sums.
        k: number of directions.
        seed: frame seed.
        stage_log_growth_top: per stage, the summed log-growth of the top direction.
    """

    units: list[str]
    log_growth: np.ndarray
    cumulative: np.ndarray
    k: int
    seed: int
    stage_log_growth_top: dict[int, float]


def lyapunov_spectrum(
    lin: Linearization, k: int = 16, seed: int = 0, method: str | None = None
) -> LyapunovResult:
    """Propagate an orthonormal ``k``-frame through all unit Jacobians with QR after each unit.

    Args:
        lin: a :class:`~linstab.network.Linearization` (its dtype is used).
        k: number of directions (at most the smallest unit dimension).
        seed: seed of the initial random frame.
        method: unit Jacobian method (default: the linearization's).
    """
    k = check_int("k", k)
    seed = check_int("seed", seed, 0)
    net = lin.net
    dims = [(int(a[0].numel()), int(b[0].numel())) for a, b in zip(lin.inputs, lin.outputs, strict=True)]
    n_min = min(min(d) for d in dims)
    if not 1 <= k <= n_min:
        raise ValueError(f"k must be in 1..{n_min} (smallest unit dimension), got {k}")
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn((dims[0][0], k), generator=g, dtype=torch.float64).to(lin.dtype)
    Q, _ = torch.linalg.qr(Q)
    logs, names = [], []
    for u in net.units:
        J = lin.unit(u.stage, u.index, method)
        Z = J.matmat(Q.T.reshape(k, *J.in_shape)).reshape(k, -1).T
        Q, R = torch.linalg.qr(Z)
        d = torch.diagonal(R).abs().to(torch.float64).clamp_min(1e-300)
        signs = torch.sign(torch.diagonal(R))
        Q = Q * torch.where(signs == 0, torch.ones_like(signs), signs)
        logs.append(torch.log(d).numpy())
        names.append(u.address)
    L = np.stack(logs)
    stages: dict[int, float] = {}
    for i, u in enumerate(net.units):
        stages[u.stage] = stages.get(u.stage, 0.0) + float(L[i, 0])
    return LyapunovResult(
        units=names,
        log_growth=L,
        cumulative=np.cumsum(L, axis=0),
        k=k,
        seed=seed,
        stage_log_growth_top=stages,
    )
