"""Gauss and Gauss-Radau quadrature from Lanczos coefficients, with rigorous distribution bounds.

A Lanczos run from a vector ``z`` on a symmetric ``A`` (eigenpairs ``lambda_i, v_i``) defines
the probe's spectral measure ``nu_z = sum_i (z . v_i)^2 delta(lambda_i)``; its distribution
function ``F(x) = nu_z((-inf, x])`` at a threshold is the Hutchinson sample
``z^T 1[A <= x] z`` of the eigenvalue count ``#(lambda <= x)``.

* Gauss rule (Golub-Welsch): nodes are the eigenvalues of the ``k x k`` Jacobi matrix ``T``,
  weights are ``|z|^2`` times the *squared first components* of its eigenvectors. It is exact
  for polynomials of degree ``<= 2k - 1``.
* Chebyshev-Markov-Stieltjes bounds: the Gauss-Radau rule with one node prescribed at ``t``
  (the ``(k+1) x (k+1)`` Jacobi matrix with the last diagonal entry modified, Golub 1973) is a
  canonical representation of the moments up to degree ``2k``; for *every* measure with these
  moments, hence for ``nu_z``, ``sum_{x_i < t} w_i <= F(t - 0) <= F(t) <= sum_{x_i <= t} w_i``
  (Akhiezer, *The classical moment problem*, ch. 3; Krein & Nudelman). The gap is the weight at
  ``t``, the Christoffel function: how much mass ``k`` Lanczos steps cannot place on either
  side of ``t``. The bounds hold in exact arithmetic; with finite-precision Lanczos (no
  reorthogonalization) they hold for Greenbaum's nearby measure, whose atoms are spread over
  tiny intervals around the true eigenvalues.

All small dense linear algebra here is float64 on the CPU (``k x k`` problems).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import torch

from .lanczos import LanczosResult

__all__ = ["gauss_quadrature", "radau_bounds", "distribution_bounds", "largest_ritz"]


def _rule(d: np.ndarray, e: np.ndarray, mu0: float) -> tuple[np.ndarray, np.ndarray]:
    if d.size == 0:
        return np.zeros(0), np.zeros(0)
    if d.size == 1:
        return d.copy(), np.array([mu0])
    x, V = sla.eigh_tridiagonal(d, e)
    return x, mu0 * V[0] ** 2


def _run(res: LanczosResult, b: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    k = int(res.lengths[b])
    a = res.alpha[b, :k].numpy()
    bb = res.beta[b, :k].numpy()
    mu0 = float(res.start_norm[b]) ** 2
    last = float(bb[k - 1]) if k > 0 else 0.0
    return a, bb[: max(k - 1, 0)], last, mu0


def gauss_quadrature(res: LanczosResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss nodes and weights of every probe's spectral measure (Golub-Welsch).

    Args:
        res: a :class:`~linstab.linalg.lanczos.LanczosResult` with ``B`` runs of ``k`` steps.

    Returns:
        ``(nodes, weights)``, each ``(B, k)`` float64 (CPU), nodes ascending per row. Weights
        of a row sum to the squared start norm ``|z_b|^2``. Runs shorter than ``k`` (breakdown:
        the rule is then exact) are padded with nodes 0 of weight 0.
    """
    B, k = res.alpha.shape
    nodes = torch.zeros((B, k), dtype=torch.float64)
    weights = torch.zeros((B, k), dtype=torch.float64)
    for b in range(B):
        a, e, _, mu0 = _run(res, b)
        x, w = _rule(a, e, mu0)
        nodes[b, : x.size] = torch.from_numpy(x)
        weights[b, : w.size] = torch.from_numpy(w)
    return nodes, weights


def _radau(a: np.ndarray, e: np.ndarray, last: float, mu0: float, t: float) -> tuple[float, float]:
    """``(lo, hi)`` with ``lo <= F(t - 0) <= F(t) <= hi`` for one run."""
    k = a.size
    if k == 0 or mu0 == 0:
        return 0.0, 0.0
    scale = float(np.abs(a).max() + (np.abs(e).max() if e.size else 0.0) + last + abs(t))
    tiny = np.finfo(np.float64).eps * max(scale, 1e-300)
    if last == 0.0:
        # the Krylov space is invariant: the Gauss rule is the measure itself (nodes within
        # rounding of t count as possibly on either side)
        x, w = _rule(a, e, mu0)
        return float(w[x < t - 10 * tiny].sum()), float(w[x <= t + 10 * tiny].sum())
    # last pivot of the LDL^T of T_k - t I: (T_k - t I)^{-1}_{kk} = 1 / piv
    piv = a[0] - t
    for j in range(1, k):
        if abs(piv) < tiny:
            piv = tiny if piv >= 0 else -tiny
        piv = a[j] - t - e[j - 1] ** 2 / piv
    if abs(piv) < tiny:
        piv = tiny if piv >= 0 else -tiny
    phi = t + last**2 / piv
    d = np.append(a, phi)
    off = np.append(e, last)
    x, w = _rule(d, off, mu0)
    i = int(np.argmin(np.abs(x - t)))
    lo = float(w[:i].sum())
    return lo, lo + float(w[i])


def radau_bounds(res: LanczosResult, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Chebyshev-Markov-Stieltjes bounds of every probe's distribution function at ``t``.

    Args:
        res: the Lanczos runs (``B`` probes).
        t: the threshold, in the units of ``A``'s eigenvalues (``s^2``).

    Returns:
        ``(lo, hi)``, each ``(B,)`` float64 (CPU), with ``lo <= F_b(t - 0) <= F_b(t) <= hi``
        for the spectral measure ``F_b`` of probe ``b``. ``hi - lo`` is the Gauss-Radau weight
        at ``t`` (zero for runs that ended in an invariant subspace and do not have ``t`` as a
        node).
    """
    B = res.alpha.shape[0]
    lo = torch.zeros(B, dtype=torch.float64)
    hi = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        a, e, last, mu0 = _run(res, b)
        lo[b], hi[b] = _radau(a, e, last, mu0, float(t))
    return lo, hi


def distribution_bounds(res: LanczosResult, ts) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`radau_bounds` at several thresholds: ``(lo, hi)``, each ``(B, len(ts))``."""
    ts = [float(t) for t in ts]
    lo = torch.zeros((res.alpha.shape[0], len(ts)), dtype=torch.float64)
    hi = torch.zeros_like(lo)
    for j, t in enumerate(ts):
        lo[:, j], hi[:, j] = radau_bounds(res, t)
    return lo, hi


def largest_ritz(res: LanczosResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest Ritz value of every run and its residual norm ``beta_k |s_k|``.

    For each probe there is an eigenvalue of ``A`` within the residual of the largest Ritz
    value; ``theta + residual`` is the usual (Zhou & Li 2011) practical upper bound of
    ``lambda_max(A)`` from a few Lanczos steps (safe unless the start vector is nearly
    orthogonal to the top eigenvectors, which random probes make unlikely).

    Returns:
        ``(theta, residual)``, each ``(B,)`` float64 (CPU); zeros for empty runs.
    """
    B = res.alpha.shape[0]
    theta = torch.zeros(B, dtype=torch.float64)
    resid = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        a, e, last, _ = _run(res, b)
        k = a.size
        if k == 0:
            continue
        if k == 1:
            theta[b], resid[b] = float(a[0]), abs(last)
            continue
        x, V = sla.eigh_tridiagonal(a, e, select="i", select_range=(k - 1, k - 1))
        theta[b], resid[b] = float(x[0]), abs(last * float(V[-1, 0]))
    return theta, resid
