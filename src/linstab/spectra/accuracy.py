"""``value_error``: how far computed singular values may be from the exact ones.

Exact routes compute eigenvalues ``lam`` of a symmetric matrix of size ``N`` (a Gram matrix,
or the ``2r x 2r`` core of the structured route, where ``s^2 = alpha^2 + lam``) with a
backward-stable eigensolver. Their rounding error is estimated as

    |lam_hat - lam| <= delta = C * sqrt(N) * eps(dtype) * max|lam|,  C = ERROR_CONSTANT,

(plus ``C * sqrt(K) * eps * max|lam|`` when a dense Gram with inner dimension ``K`` is formed
in that dtype), the usual estimate of the accumulated rounding error of Householder
tridiagonalization and of inner products (the
rigorous worst case grows like ``N`` instead of ``sqrt(N)``; the tests compare float32 with
float64 values on trained units and stages and check that every float64 value lies within
the estimate). A singular value ``s_hat`` then lies in
``[sqrt(max(s_hat^2 - delta, 0)), sqrt(s_hat^2 + delta)]``. Iterative routes give each value's
residual ``rho``, a bound ``|s_hat - s| <= rho`` for some singular value ``s`` of the operator
as computed; the rounding of the operator's own products adds ``C * sqrt(n) * eps * s_max``
(``n``: the operator's smaller side).

Calibration (``benchmarks/results/report_profile_after.json``, ``figure1_vs_reference``): on
ResNet-56's Figure 1 panels at 5 images, float32 values against float64 ones, the largest
``|s_hat - s| / bound`` was 1.3 with ``C = 4`` (structured route, unit 1.5) and the top-k
values of stage 1 needed ``4.96 * sqrt(n) * eps * s_max``; ``C = 16`` leaves a factor 3 to both.
"""

from __future__ import annotations

import math

import torch

from ..linalg.results import EXACT_ROUTES, SpectrumResult

ERROR_CONSTANT = 16.0
"""``C`` of the rounding-error estimate (see the module docstring)."""


def squared_error(res: SpectrumResult) -> float:
    """The estimate ``delta`` of ``|s_hat^2 - s^2|`` of an exact route's values (0 for none)."""
    s = res.values.to(torch.float64)
    if s.numel() == 0:
        return 0.0
    eps = torch.finfo(res.dtype).eps
    info = res.info or {}
    if res.route == "structured":
        n = int(info.get("core_size", 0))
        if n == 0:
            return 0.0
        a2 = float(res.alpha or 0.0) ** 2
        lam_max = float((s**2 - a2).abs().max())
        return ERROR_CONSTANT * math.sqrt(n) * eps * max(lam_max, a2)
    n = int(info.get("gram_size", info.get("rows", s.numel())))
    inner = int(info.get("inner", 0))  # dense Gram formed in this dtype: its rounding adds
    return ERROR_CONSTANT * (math.sqrt(max(n, 1)) + math.sqrt(inner)) * eps * float(s.max()) ** 2


def value_error(res: SpectrumResult) -> torch.Tensor:
    """Per-value bound of ``|s_hat_i - s_i|`` (float64, shaped like ``res.values``).

    Exact routes: from :func:`squared_error`; iterative routes: the residuals plus the rounding
    of the operator's products (``inf`` where a method reports no residuals).
    """
    s = res.values.to(torch.float64)
    if res.route not in EXACT_ROUTES:  # an iterative solver's (top-k routed to exact is exact)
        if res.residuals is None or res.residuals.numel() != s.numel():
            return torch.full_like(s, math.inf)
        n = min(res.shape) if res.shape else s.numel()
        eps = torch.finfo(res.dtype).eps
        smax = float(s.max()) if s.numel() else 0.0
        return res.residuals.to(torch.float64).abs() + ERROR_CONSTANT * math.sqrt(n) * eps * smax
    if res.route == "dense-svd":  # no squaring: the error is relative to the largest value
        eps = torch.finfo(res.dtype).eps
        smax = float(s.max()) if s.numel() else 0.0
        return torch.full_like(s, ERROR_CONSTANT * math.sqrt(max(s.numel(), 1)) * eps * smax)
    return error_from_squared(s, squared_error(res))


def error_from_squared(values, delta: float) -> torch.Tensor:
    """Per-value bound of ``|s_hat - s|`` when ``|s_hat^2 - s^2| <= delta`` (float64)."""
    s = torch.as_tensor(values, dtype=torch.float64)
    up = torch.sqrt(s**2 + delta) - s
    down = s - torch.sqrt(torch.clamp(s**2 - delta, min=0))
    return torch.maximum(up, down)


def band_fraction_bounds(
    values, errors, lo: float = 0.99, hi: float = 1.01, n: int | None = None
) -> tuple[float, float]:
    """Smallest and largest possible fraction of singular values in ``[lo, hi]`` given
    per-value error bounds: a value counts surely when its whole interval lies in the band,
    possibly when its interval meets the band.

    Args:
        values: computed values ``(k,)``.
        errors: their bounds ``(k,)``.
        lo: lower edge of the band.
        hi: upper edge of the band.
        n: the number of singular values (default ``k``).
    """
    s = torch.as_tensor(values, dtype=torch.float64)
    e = torch.as_tensor(errors, dtype=torch.float64)
    if s.shape != e.shape:
        raise ValueError(
            f"values and errors must have the same shape, got {tuple(s.shape)} and {tuple(e.shape)}"
        )
    n = s.numel() if n is None else int(n)
    if n <= 0:
        raise ValueError("band_fraction_bounds needs at least one value")
    sure = int(((s - e >= lo) & (s + e <= hi)).sum())
    maybe = int(((s + e >= lo) & (s - e <= hi)).sum())
    return sure / n, maybe / n
