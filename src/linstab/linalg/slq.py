"""Stochastic Lanczos quadrature (SLQ): the density of singular values of a matrix-free ``J``.

For Rademacher probes ``z`` on the probe space (dimension ``p``, see
:mod:`linstab.linalg.exact_parts`) ``E[z^T f(A) z] = tr f(A)`` for the Gram ``A`` (``J^T J`` or the
active-row ``J_S J_S^T``), whose eigenvalues are the squared singular values ``s^2``. ``k``
Lanczos steps from ``z`` give the Gauss rule of the probe's spectral measure: nodes
``theta_j`` (Ritz values) and weights ``|z|^2 S_{1j}^2`` (squared *first* components of the
eigenvectors of the Jacobi matrix). Averaged over probes, ``sum_j w_j delta(s - sqrt(theta_j))``
estimates the spectral density of ``s`` (Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38,
2017). Structural zeros are not estimated: they are counted exactly and added.

Shapes: ``n = min(n_out, n_in)`` singular values; ``N`` probes; ``k`` Lanczos steps.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..io.validate import check_int
from ..operators import LinearOperator
from .exact_parts import ExactParts, exact_parts
from .lanczos import REORTH, LanczosResult, _check_op, lanczos
from .quadrature import gauss_quadrature, largest_ritz
from .results import ConvergenceWarning, SpectrumResult, check_seed

__all__ = [
    "AccuracyWarning",
    "SLQResult",
    "slq",
    "rademacher_probes",
    "spectral_bound",
    "choose_parameters",
    "DEFAULT_PROBES",
    "DEFAULT_RESOLUTION",
]

DEFAULT_PROBES = 16
DEFAULT_RESOLUTION = 0.0025


class AccuracyWarning(ConvergenceWarning):
    """An estimate is clearly less accurate than asked for (too few Lanczos steps or probes)."""


def rademacher_probes(
    dim: int,
    n_probes: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    support: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Rademacher (``+-1``) probe vectors, zero outside ``support``.

    Args:
        dim: vector length.
        n_probes: number of probes ``N >= 1``.
        dtype: float dtype of the result.
        device: where to generate them (a device generator, seeded; falls back to the CPU).
        support: optional boolean ``(dim,)`` mask.
        seed: generator seed.

    Returns:
        ``(dim, N)`` tensor on ``device``; every column has squared norm ``#support``.
    """
    n_probes = check_int("n_probes", n_probes)
    seed = check_seed(seed)
    device = torch.device(device)
    try:
        g = torch.Generator(device=device)
        gen_dev = device
    except RuntimeError:  # pragma: no cover - devices without generators
        g, gen_dev = torch.Generator(), torch.device("cpu")
    g.manual_seed(int(seed))
    Z = torch.randint(0, 2, (dim, n_probes), generator=g, device=gen_dev, dtype=torch.int8)
    Z = Z.to(device=device, dtype=dtype).mul_(2).sub_(1)
    if support is not None:
        Z = Z * support.to(device=device, dtype=dtype)[:, None]
    return Z


def _resolve_exact(op: LinearOperator, exact) -> ExactParts:
    if isinstance(exact, ExactParts):
        if exact.n != min(op.shape):
            raise ValueError(f"exact parts are for n = {exact.n}, the operator has n = {min(op.shape)}")
        return exact
    if exact == "auto":
        return exact_parts(op)
    if exact is None or exact is False:
        return exact_parts(op, detect=False)
    raise TypeError(f"exact must be 'auto', None or an ExactParts, got {exact!r}")


def spectral_bound(
    op: LinearOperator,
    *,
    steps: int = 24,
    seed: int = 0,
    exact="auto",
    topk: SpectrumResult | None = None,
    safety: float = 1.01,
) -> float:
    """An upper estimate of the largest singular value ``s_max`` (for grids and step rules).

    ``steps`` Lanczos steps (full reorthogonalization) on the Gram from one Rademacher probe;
    the bound is ``sqrt(theta_max + r) * safety`` with the largest Ritz value ``theta_max`` and
    its residual ``r`` (see :func:`~linstab.linalg.quadrature.largest_ritz`). With ``topk``, a
    result of ``linstab.spectra.spectrum(op, "topk", k=...)``, the larger of that and
    ``(s_1 + residual_1) * safety`` is returned.

    Args:
        op: the operator ``J``.
        steps: Lanczos steps (``>= 1``).
        seed: probe seed.
        exact: ``"auto"``, ``None`` or an :class:`~linstab.linalg.exact.ExactParts`.
        topk: optional top singular triplets of ``op``.
        safety: factor ``>= 1`` applied to the bound.

    Returns:
        the estimate (float).
    """
    _check_op(op)
    steps = check_int("steps", steps)
    if not safety >= 1:
        raise ValueError(f"safety must be >= 1, got {safety!r}")
    ex = _resolve_exact(op, exact)
    dim = op.shape[0] if ex.side == "left" else op.shape[1]
    Z = rademacher_probes(dim, 1, dtype=op.dtype, device=op.device, support=ex.support, seed=seed)
    res = lanczos(op, Z, steps, side=ex.side, support=ex.support, reorth="full")
    theta, resid = largest_ritz(res)
    bound = math.sqrt(max(float(theta.max() + resid.max()), 0.0)) * safety
    if topk is not None:
        if not isinstance(topk, SpectrumResult) or topk.values.numel() == 0:
            raise TypeError(
                "topk must be a non-empty SpectrumResult from spectra.spectrum(op, 'topk', k=...)"
            )
        r1 = float(topk.residuals[0]) if topk.residuals is not None else 0.0
        bound = max(bound, (float(topk.values[0]) + r1) * safety)
    return bound


def choose_parameters(
    n_probe_space: int,
    *,
    n: int | None = None,
    accuracy: float = 0.01,
    confidence: float = 0.95,
    s_max: float,
    resolution: float = DEFAULT_RESOLUTION,
    edge: float = 1.0,
    min_probes: int = 8,
    max_steps: int | None = None,
) -> tuple[int, int]:
    """Probes and Lanczos steps for band counts / densities of a stated accuracy.

    Probes (Hutchinson variance bound): for an orthogonal projector ``P`` of rank ``c`` on a
    probe space of dimension ``p``, a Rademacher sample ``z^T P z`` has variance
    ``2 (c - sum_i P_ii^2) <= 2 c (1 - c / p) <= p / 2``. A normal-approximation interval of
    half-width ``accuracy * n`` at level ``confidence`` therefore needs
    ``N >= z_q^2 p / (2 (accuracy n)^2)`` probes (``z_q`` the two-sided normal quantile); at
    least ``min_probes`` are used so that the t-interval has enough degrees of freedom. (The
    worst-case bound ``N >= 24 eps^-2 log(2 / eta)`` of Ubaru, Chen & Saad 2017, for relative
    error ``eps`` with probability ``1 - eta``, is far more conservative; the intervals here are
    computed a posteriori anyway.)

    Steps (node spacing): the Gauss nodes of ``k`` Lanczos steps on ``[0, s_max^2]`` are spread
    like Chebyshev nodes (arcsine law), so near a band edge ``s = edge`` they are about
    ``pi sqrt(s_max^2 - edge^2) / (2 k)`` apart in ``s``. ``k = ceil(pi sqrt(s_max^2 - edge^2) /
    (2 resolution))`` makes that spacing ``resolution``; the quadrature part of a band interval
    is then about the number of singular values within ``resolution`` of each band edge (it is
    measured exactly, a posteriori, by the Gauss-Radau bounds). Capped at ``p`` and
    ``max_steps``, at least 8.

    Args:
        n_probe_space: ``p``, dimension of the probe space.
        n: number of singular values the accuracy refers to (default ``p``).
        accuracy: wanted half-width of the stochastic part of the interval, as a fraction of
            ``n`` (``0 < accuracy < 1``).
        confidence: interval level (``0 < confidence < 1``).
        s_max: an upper estimate of the largest singular value (:func:`spectral_bound`).
        resolution: wanted node spacing near the band edge, in units of ``s``.
        edge: the band edge the spacing refers to (the paper's bands sit at ``s = 1``).
        min_probes: lower limit of the number of probes (``>= 2``).
        max_steps: optional upper limit of the number of steps.

    Returns:
        ``(n_probes, steps)``.
    """
    p = check_int("n_probe_space", n_probe_space)
    n = p if n is None else check_int("n", n)
    min_probes = check_int("min_probes", min_probes, 2)
    if not 0 < accuracy < 1:
        raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not (resolution > 0 and s_max > 0 and edge > 0):
        raise ValueError(f"need resolution, s_max, edge > 0, got {resolution!r}, {s_max!r}, {edge!r}")
    from scipy.stats import norm

    zq = float(norm.ppf(0.5 + confidence / 2))
    n_probes = max(min_probes, math.ceil(zq**2 * p / (2 * (accuracy * n) ** 2)))
    span = math.sqrt(max(s_max**2 - edge**2, 0.25 * s_max**2))
    steps = max(8, math.ceil(math.pi * span / (2 * resolution)))
    steps = min(steps, p, max_steps if max_steps is not None else steps)
    return int(n_probes), int(steps)


@dataclass
class SLQResult:
    """SLQ estimate of the singular-value density of an operator.

    Attributes:
        nodes: Gauss nodes per probe, eigenvalues of the Gram (``s^2``), ``(N, k')`` float64
            (``k' = k`` plus the deflated values, if any); padding nodes have weight 0.
        weights: matching weights, ``(N, k')`` float64, each row summing to 1 (a fraction of
            the probe space).
        n: number of singular values ``min(n_out, n_in)``.
        n_probes: ``N``.
        lanczos_steps: ``k``.
        exact: the exact parts used (:class:`~linstab.linalg.exact.ExactParts`).
        lanczos: the Lanczos coefficients (for the band bounds).
        dtype: the operator's dtype.
        seed: probe seed.
        deflated_values: Gram eigenvalues ``s_i^2`` treated exactly (from ``deflate``),
            ``(L,)`` float64, or ``None``.
        deflated_weights: their per-probe weights ``(z . v_i)^2``, ``(N, L)``, or ``None``.
        bin_edges, hist, hist_stderr: histogram over ``s`` (edges ``(nb + 1,)``; estimated
            counts and their standard errors ``(nb,)``, structural zeros included).
        grid, density, sigma: Gaussian-smoothed density of ``s`` (counts per unit ``s``,
            integrating to about ``n``) on ``grid`` with kernel width ``sigma``.
        timings: seconds per phase.
        max_steps: the step cap when a ``stop`` rule chose the number of steps, else ``None``.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    n: int
    n_probes: int
    lanczos_steps: int
    exact: ExactParts
    lanczos: LanczosResult
    dtype: torch.dtype
    seed: int = 0
    max_steps: int | None = None
    deflated_values: torch.Tensor | None = None
    deflated_weights: torch.Tensor | None = None
    bin_edges: torch.Tensor | None = None
    hist: torch.Tensor | None = None
    hist_stderr: torch.Tensor | None = None
    grid: torch.Tensor | None = None
    density: torch.Tensor | None = None
    sigma: float | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_probe_space(self) -> int:
        """``p``: the number of Gram eigenvalues estimated (the rest are structural zeros)."""
        return self.exact.n_probe_space

    @property
    def sv_nodes(self) -> torch.Tensor:
        """Nodes as singular values ``sqrt(max(theta, 0))``, ``(N, k')``."""
        return torch.sqrt(self.nodes.clamp_min(0))

    def s_max_estimate(self) -> float:
        """Largest singular value estimate: ``sqrt(max(theta_max + residual))`` over probes."""
        theta, resid = largest_ritz(self.lanczos)
        top = float((theta + resid).max()) if theta.numel() else 0.0
        if self.deflated_values is not None and self.deflated_values.numel():
            top = max(top, float(self.deflated_values.max()))
        return math.sqrt(max(top, 0.0))

    def _per_probe_hist(self, edges: torch.Tensor) -> torch.Tensor:
        s = self.sv_nodes
        idx = torch.bucketize(s, edges, right=True) - 1  # bin i: edges[i] <= s < edges[i+1]
        nb = edges.numel() - 1
        idx = torch.where(s == edges[-1], torch.full_like(idx, nb - 1), idx)
        inside = (idx >= 0) & (idx < nb)
        H = torch.zeros((s.shape[0], nb), dtype=torch.float64)
        H.scatter_add_(1, idx.clamp(0, nb - 1), torch.where(inside, self.weights, 0.0))
        H = H * self.n_probe_space
        z0 = torch.bucketize(torch.zeros(1, dtype=torch.float64), edges, right=True) - 1
        if 0 <= int(z0) < nb:
            H[:, int(z0)] += self.exact.n_structural_zero
        return H

    def histogram(self, edges) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated number of singular values per bin of ``s``.

        Args:
            edges: increasing bin edges ``(nb + 1,)``; bins are ``[e_i, e_{i+1})``, the last
                one closed. Mass outside the edges is dropped.

        Returns:
            ``(counts, stderr)``, each ``(nb,)`` float64: the probe mean and its standard error
            (0 with one probe). Structural zeros are added exactly to the bin holding 0.

        The standard error covers the sampling part only: a Gauss node whose mass straddles a
        bin edge is assigned to one side (quadrature bias of about one node weight per edge,
        shrinking with ``k``). For counts with rigorous quadrature bounds use :meth:`bands`.
        """
        edges = torch.as_tensor(edges, dtype=torch.float64).flatten()
        if edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
            raise ValueError(f"edges must be increasing with at least 2 entries, got {edges.tolist()[:8]}")
        H = self._per_probe_hist(edges)
        se = H.std(dim=0) / math.sqrt(H.shape[0]) if H.shape[0] > 1 else torch.zeros(H.shape[1])
        return H.mean(dim=0), se

    def smoothed_density(self, grid, sigma: float) -> torch.Tensor:
        """Gaussian-smoothed density of ``s`` (counts per unit ``s``) on ``grid``.

        Args:
            grid: points ``(G,)``.
            sigma: kernel standard deviation (``> 0``), in units of ``s``.

        Returns:
            ``(G,)`` float64; it integrates to about ``n`` (structural zeros are a kernel at 0,
            half of which lies below 0).
        """
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        g = torch.as_tensor(grid, dtype=torch.float64).flatten()
        s = self.sv_nodes
        c = 1.0 / (math.sqrt(2 * math.pi) * sigma)
        out = torch.zeros_like(g)
        for b in range(s.shape[0]):  # one probe at a time: memory (G, k')
            K = torch.exp(-0.5 * ((g[:, None] - s[b][None, :]) / sigma) ** 2)
            out += K @ self.weights[b]
        out *= c * self.n_probe_space / s.shape[0]
        out += self.exact.n_structural_zero * c * torch.exp(-0.5 * (g / sigma) ** 2)
        return out

    def moments(self, orders) -> torch.Tensor:
        """Estimated spectral moments ``sum_i s_i^(2j)`` over all ``n`` singular values.

        The Gauss rule of ``k`` steps is exact for ``j <= 2k - 1`` per probe, so these are
        Hutchinson estimates of ``tr(A^j)`` (structural zeros add nothing for ``j >= 1``;
        ``j = 0`` gives ``n``).

        Args:
            orders: non-negative integers ``(J,)``.

        Returns:
            ``(J,)`` float64.
        """
        js = [int(j) for j in orders]
        if any(j < 0 for j in js):
            raise ValueError(f"orders must be >= 0, got {js}")
        out = []
        for j in js:
            if j == 0:
                out.append(float(self.n))
                continue
            per = (self.weights * self.nodes.pow(j)).sum(dim=1) * self.n_probe_space
            out.append(float(per.mean()))
        return torch.tensor(out, dtype=torch.float64)

    def to_dict(self) -> dict:
        """Summary, JSON-serializable (histogram and density included when computed)."""
        d = {
            "n": self.n,
            "n_probes": self.n_probes,
            "lanczos_steps": self.lanczos_steps,
            "reorth": self.lanczos.reorth,
            "side": self.lanczos.side,
            "dtype": str(self.dtype).replace("torch.", ""),
            "seed": self.seed,
            "exact": self.exact.to_dict(),
            "n_deflated": 0 if self.deflated_values is None else int(self.deflated_values.numel()),
            "max_steps": self.max_steps,
            "timings": dict(self.timings),
        }
        if self.hist is not None:
            d["bin_edges"] = self.bin_edges.tolist()
            d["hist"] = self.hist.tolist()
            d["hist_stderr"] = self.hist_stderr.tolist()
        if self.density is not None:
            d["grid"] = self.grid.tolist()
            d["density"] = self.density.tolist()
            d["sigma"] = self.sigma
        return d


def _deflation(deflate, ex: ExactParts, op: LinearOperator) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(deflate, SpectrumResult):
        raise TypeError(
            "deflate must be a SpectrumResult with vectors, e.g. "
            f"spectra.spectrum(op, 'topk', k=8, vectors=True); got {type(deflate).__name__}"
        )
    vecs = deflate.U if ex.side == "left" else deflate.V
    if vecs is None or deflate.values.numel() == 0:
        raise ValueError("deflate needs singular vectors: call spectra.spectrum(..., vectors=True)")
    L = vecs.to(device=op.device, dtype=op.dtype)
    if ex.support is not None:
        off = (L * (~ex.support).to(L.dtype)[:, None]).abs().max()
        if float(off) > 1e-6 * max(float(L.abs().max()), 1e-300):
            raise ValueError("deflate vectors are not supported on the probe space (active rows)")
        L = L * ex.support.to(L.dtype)[:, None]
    G = L.T @ L
    tol = 1e-6 if op.dtype == torch.float64 else 1e-3
    if float((G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device)).abs().max()) > tol:
        raise ValueError("deflate vectors must be orthonormal (columns of U or V from spectra.spectrum)")
    if not deflate.converged:
        warnings.warn(
            "deflate: the top singular triplets did not converge; the deflated values are not exact",
            AccuracyWarning,
            stacklevel=3,
        )
    return L, deflate.values.to(torch.float64).cpu() ** 2


def slq(
    op: LinearOperator,
    *,
    n_probes: int | None = None,
    steps: int | None = None,
    accuracy: float | None = None,
    confidence: float = 0.95,
    resolution: float | None = None,
    seed: int = 0,
    reorth: str = "none",
    exact="auto",
    deflate: SpectrumResult | None = None,
    bins=None,
    grid=None,
    sigma: float | None = None,
    stop: Callable[[SLQResult], bool] | None = None,
    check_at=None,
) -> SLQResult:
    """Stochastic Lanczos quadrature of the singular values of ``op`` (matrix-free).

    ``N`` Rademacher probes on the probe space (active rows of a ReLU-masked unit: structural
    zeros are removed exactly and added back as counts), ``k`` batched Lanczos steps on the
    Gram, Gauss quadrature per probe. Memory ``O(dim N)`` (``reorth="none"``), all vector work
    on the operator's device.

    Args:
        op: the operator ``J`` (unit, stage or network Jacobian, or any
            :class:`~linstab.operators.LinearOperator`).
        n_probes: probes ``N >= 1`` (default from ``accuracy`` via :func:`choose_parameters`,
            else 16).
        steps: Lanczos steps ``k >= 1`` (default from :func:`choose_parameters` with
            ``resolution``; capped at ``p``).
        accuracy: target half-width (fraction of ``n``) used to choose ``n_probes``.
        confidence: level used with ``accuracy``.
        resolution: node spacing near ``s = 1`` used to choose ``steps`` (units of ``s``;
            default: half the density's kernel width ``sigma``, which is all a smoothed density
            resolves -- about 300 steps with the default ``sigma``; band counts pass a finer one).
        seed: probe seed.
        reorth: ``"none"``, ``"selective"`` or ``"full"`` (see :func:`~linstab.linalg.lanczos.lanczos`);
            ``"none"`` becomes ``"selective"`` when ``deflate`` is given.
        exact: ``"auto"`` (detect structural zeros and exact ``|alpha|`` values), ``None``
            (use nothing) or an :class:`~linstab.linalg.exact.ExactParts`.
        deflate: optional top singular triplets with vectors
            (``spectra.spectrum(op, "topk", k=..., vectors=True)``): their values are counted
            exactly per probe and Lanczos runs on the orthogonal complement.
        bins: histogram edges over ``s`` (default: 100 bins on ``[0, 1.05 s_max]``).
        grid: density grid (default: 512 points on ``[0, 1.05 s_max]``).
        sigma: density kernel width in units of ``s`` (default: 1% of the grid range).
        stop: optional rule that ends the Lanczos runs early (``steps`` is then the cap):
            called at the step counts ``check_at`` (default 16, 32, 64, ...) with a partial
            :class:`SLQResult` whose ``lanczos``, ``exact`` and deflation are filled and whose
            ``nodes``/``weights`` are empty; e.g.
            :func:`~linstab.linalg.band_estimates.steps_rule`.
        check_at: step counts at which ``stop`` is asked.

    Returns:
        an :class:`SLQResult`.

    Raises:
        TypeError: not an operator, or bad argument types.
        ValueError: ``n_probes``/``steps`` < 1, bad ``accuracy``/``confidence``, or NaN/Inf
            from the operator.
    """
    t0 = time.perf_counter()
    _check_op(op)
    seed = check_seed(seed)
    if reorth not in REORTH:
        raise ValueError(f"reorth must be one of {REORTH}, got {reorth!r}")
    ex = _resolve_exact(op, exact)
    p = ex.n_probe_space
    timings: dict[str, float] = {}
    if n_probes is not None:
        n_probes = check_int("n_probes", n_probes)
    if steps is not None:
        steps = check_int("steps", steps)
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if resolution is not None and not resolution > 0:
        raise ValueError(f"resolution must be > 0, got {resolution!r}")
    if n_probes is None or steps is None:
        t1 = time.perf_counter()
        s_max = spectral_bound(op, exact=ex, seed=seed + 7919)
        timings["bound"] = time.perf_counter() - t1
        if resolution is None:
            resolution = (float(sigma) if sigma is not None else 1.05 * max(s_max, 1e-12) / 100) / 2
        N, k = choose_parameters(
            max(p, 1),
            n=ex.n,
            accuracy=accuracy if accuracy is not None else 0.05,
            confidence=confidence,
            s_max=max(s_max, 1e-12),
            resolution=resolution,
        )
        n_probes = n_probes if n_probes is not None else (N if accuracy is not None else DEFAULT_PROBES)
        steps = steps if steps is not None else k
    dim = op.shape[0] if ex.side == "left" else op.shape[1]
    Z = rademacher_probes(dim, n_probes, dtype=op.dtype, device=op.device, support=ex.support, seed=seed)
    locked, dvals, dweights = None, None, None
    if deflate is not None:
        locked, dvals = _deflation(deflate, ex, op)
        C = locked.T @ Z  # (L, N)
        dweights = (C.T**2).to(device="cpu", dtype=torch.float64)
        if reorth == "none":
            reorth = "selective"

    def result(lan: LanczosResult, nodes, weights, max_steps=None) -> SLQResult:
        return SLQResult(
            nodes=nodes,
            weights=weights,
            n=ex.n,
            n_probes=n_probes,
            lanczos_steps=lan.steps,
            exact=ex,
            lanczos=lan,
            dtype=op.dtype,
            seed=seed,
            deflated_values=dvals,
            deflated_weights=dweights,
            max_steps=max_steps,
        )

    rule = None
    if stop is not None:

        def rule(lan: LanczosResult) -> bool:
            empty = torch.zeros((n_probes, 0), dtype=torch.float64)
            t2 = time.perf_counter()
            done = bool(stop(result(lan, empty, empty)))
            timings["stop_checks"] = timings.get("stop_checks", 0.0) + time.perf_counter() - t2
            return done

    t1 = time.perf_counter()
    res = lanczos(
        op,
        Z,
        steps,
        side=ex.side,
        support=ex.support,
        reorth=reorth,
        locked=locked,
        stop=rule,
        check_at=check_at,
    )
    timings["lanczos"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    nodes, w = gauss_quadrature(res)
    if dvals is not None:
        nodes = torch.cat([dvals.expand(n_probes, -1), nodes], dim=1)
        w = torch.cat([dweights, w], dim=1)
    total = w.sum(dim=1, keepdim=True)
    w = torch.where(total > 0, w / torch.where(total > 0, total, torch.ones_like(total)), w)
    timings["quadrature"] = time.perf_counter() - t1
    out = result(res, nodes, w, steps if stop is not None else None)
    top = 1.05 * max(out.s_max_estimate(), 1e-12)
    edges = torch.linspace(0, top, 101, dtype=torch.float64) if bins is None else bins
    out.hist, out.hist_stderr = out.histogram(edges)
    out.bin_edges = torch.as_tensor(edges, dtype=torch.float64).flatten()
    out.grid = (
        torch.linspace(0, top, 512, dtype=torch.float64)
        if grid is None
        else torch.as_tensor(grid, dtype=torch.float64).flatten()
    )
    out.sigma = float(sigma) if sigma is not None else top / 100
    out.density = out.smoothed_density(out.grid, out.sigma)
    timings["total"] = time.perf_counter() - t0
    out.timings = timings
    return out
