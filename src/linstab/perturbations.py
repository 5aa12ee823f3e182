"""Propagated perturbations: random vs adversarial, projections on singular vectors, eq. (1).

Section 3.3 of the paper, and its open question (does the jump at the end of the last stage
depend on the attack?).

Definitions (``x`` a clean image, ``x~ = x + delta`` a perturbed one, both in [0, 1]):

* ``x_0`` is the stem's output (the input of unit 1.1); ``x_k`` is the **output** of the
  ``k``-th residual unit in forward order (``k = 1..L`` over all stages).
* The **propagated perturbation at unit k** is ``dx_k = x_k(x~) - x_k(x)``; ``dx_0`` is the
  stem's. The perturbation entering unit ``k+1`` is ``dx_k`` (the difference of that unit's
  actual inputs, which equals ``dx_k`` when units are chained).
* **Raw norm** ``||dx_k||_2`` per image; **normalized norm** ``||dx_k||_2 / sqrt(numel(x_k))``
  (``numel`` per image: C*H*W), i.e. the RMS of the difference map -- the paper's
  "normalized with respect to the sizes of the activation maps" (Figure 3).
* **Growth ratio** of unit ``k``: ``||dx_k|| / ||dx_{k-1}||`` with *raw* norms (``J_k`` maps the
  raw vector; at down-sampling units the map size changes, so the ratio of normalized norms
  would differ by ``sqrt(numel_{k-1} / numel_k)``). For the stem it is ``||dx_0|| / ||delta||``
  (includes the input normalization ``1/std``).
* **Exact linear prediction** at unit ``k``: ``||J_k dx_{k-1}||`` with ``J_k`` the unit's
  Jacobian at the *clean* image; compared with the actual ``||dx_k||`` it shows where
  linearization breaks (``lin_rel_err``).
* **Eq. (1)**: with right singular vectors ``v_i`` and values ``s_i`` of ``J_k`` (descending),
  ``alpha_i = <dx_{k-1}, v_i>`` and ``||J_k dx|| = sqrt(sum_i alpha_i^2 s_i^2)``. With only the
  top ``m`` vectors, the remainder ``r^2 = ||dx||^2 - sum_{i<=m} alpha_i^2`` lies in directions
  with singular values ``<= s_m``, so ``||J_k dx||`` lies in
  ``[sqrt(sum alpha_i^2 s_i^2), sqrt(sum alpha_i^2 s_i^2 + s_m^2 r^2)]`` (``eq1``,
  ``eq1_upper``). With all vectors both equal ``||J_k dx||``.
* **Alignment** ``align10``: ``sum_{i<=10} alpha_i^2 / ||dx||^2``, the fraction of the incoming
  perturbation's energy on the top-10 right singular vectors (``10/n`` for a random direction).

Perturbations: the attacks of :mod:`linstab.attacks` (``fgsm``, ``pgd``, ``deepfool``,
``cw``) and ``random``: uniform noise in ``[-1, 1]^n``, seeded per image, scaled (with clipping
to the image box accounted for) to exactly the L2 norm of a reference attack's perturbation of
the same image (FGSM by default, as in the paper).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .attacks import ATTACKS, AttackResult, run_attack
from .data import check_images

__all__ = [
    "PERTURBATIONS",
    "Propagation",
    "RightSingular",
    "UnitPrediction",
    "PropagationAnalysis",
    "random_perturbation",
    "propagate",
    "predict_unit",
    "right_singular",
    "resolve_units",
    "default_projection_units",
    "analyze",
    "summarize",
    "summary_table",
    "read_rows",
    "write_rows",
    "add_parser",
    "add_figure_parser",
]

PERTURBATIONS: tuple[str, ...] = (*ATTACKS, "random")

ROW_FIELDS: tuple[str, ...] = (
    "image",
    "image_pos",
    "perturbation",
    "label",
    "clean_pred",
    "pert_pred",
    "flipped",
    "eps",
    "pert_l2",
    "pert_linf",
    "position",
    "address",
    "stage",
    "index",
    "kind",
    "numel",
    "norm",
    "normalized",
    "growth",
    "in_norm",
    "lin_pred",
    "lin_ratio",
    "lin_rel_err",
    "eq1",
    "eq1_upper",
    "eq1_ratio",
    "eq1_upper_ratio",
    "n_vectors",
    "spectrum",
    "captured",
    "align10",
    "sigma1",
    "sigma_last",
)


# ============================================================================================
# random perturbations
# ============================================================================================
def random_perturbation(
    image: torch.Tensor, norm: float, *, seed: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform noise with exactly a given L2 norm, keeping ``image + delta`` in [0, 1].

    ``u ~ U[-1, 1]^n``; ``delta = clip(x + s u, 0, 1) - x`` with the scale ``s`` solved (bisection,
    then an exact rescale of the unclipped entries) so that ``||delta||_2 == norm`` to float64
    round-off. Without clipping this is simply ``norm * u / ||u||``.

    Args:
        image: ``(3, H, W)`` in [0, 1].
        norm: the requested L2 norm (> 0).
        seed: seed of the noise (ignored when ``generator`` is given).
        generator: a torch generator to draw from.

    Returns:
        ``delta`` of shape ``(3, H, W)``, float64.

    Raises:
        ValueError: for a non-positive or non-finite norm, a batch instead of one image, or a
            norm larger than the image box allows in the drawn direction.
    """
    x = check_images(image, name="image")
    if x.shape[0] != 1:
        raise ValueError(f"image: expected one image (3, H, W), got a batch of {x.shape[0]}")
    x = x[0].to(torch.float64)
    if not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0:
        raise ValueError(f"norm: expected a finite float > 0, got {norm!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    u = torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1
    norm = float(norm)

    def delta_at(s: float) -> torch.Tensor:
        return (x + s * u).clamp(0, 1) - x

    s = norm / float(u.norm())
    d = delta_at(s)
    if float(d.norm()) < norm * (1 - 1e-14):
        reach = float(delta_at(1e6).norm())
        if reach < norm:
            raise ValueError(
                f"norm: {norm:.4g} is larger than the image box allows in this direction "
                f"(at most {reach:.4g}); use a smaller norm"
            )
        lo, hi = s, 2 * s
        while float(delta_at(hi).norm()) < norm:
            lo, hi = hi, 2 * hi
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if float(delta_at(mid).norm()) < norm:
                lo = mid
            else:
                hi = mid
        d = delta_at(hi)
    # exact rescale of the entries that are not at the box boundary
    y = x + d
    free = (y > 0) & (y < 1)
    fixed2 = float((d[~free] ** 2).sum())
    free2 = float((d[free] ** 2).sum())
    if free2 > 0 and norm**2 > fixed2:
        c = math.sqrt((norm**2 - fixed2) / free2)
        d = torch.where(free, d * c, d)
        d = (x + d).clamp(0, 1) - x
    return d


# ============================================================================================
# propagation
# ============================================================================================
@dataclass
class Propagation:
    """Propagated perturbations of a batch of (clean, perturbed) image pairs.

    ``L = 1 + number of units`` layers: position 0 is the stem output, position ``k`` the
    output of unit ``k`` (forward order).

    Attributes:
        addresses: ``["stem", "1.1", ...]`` (length L).
        stages: stage per layer (0 for the stem).
        indices: unit index within its stage (0 for the stem).
        kinds: ``"stem"`` or the unit kind (``regular``, ``downsampling``, ``projection``).
        numel: per-image size of each activation map.
        input_norm: ``(B,)`` ``||x~ - x||_2`` in image space.
        norms: ``(B, L)`` raw ``||dx_k||_2``.
        normalized: ``(B, L)`` ``norms / sqrt(numel)``.
        growth: ``(B, L)`` ``norms[:, k] / norms[:, k-1]`` (stem: ``/ input_norm``).
        in_diffs: per unit, ``(B, *in_shape)`` the perturbation entering it (actual input
            difference); only with ``keep=True``.
        in_norms: ``(B, L-1)`` norms of ``in_diffs`` (always).
        clean_pred, pert_pred: ``(B,)`` predictions from this forward pass (in its dtype).
        dtype: computation dtype.
    """

    addresses: list[str]
    stages: list[int]
    indices: list[int]
    kinds: list[str]
    numel: list[int]
    input_norm: torch.Tensor
    norms: torch.Tensor
    normalized: torch.Tensor
    growth: torch.Tensor
    in_norms: torch.Tensor
    clean_pred: torch.Tensor
    pert_pred: torch.Tensor
    dtype: torch.dtype
    in_diffs: list[torch.Tensor] | None = field(default=None, repr=False)


def _unit_io(net, x: torch.Tensor, dtype: torch.dtype):
    """Each unit's input and output and the logits for a batch (one forward pass in ``dtype``)."""
    ins, outs = net._trace([u.module for u in net.units], x, dtype)
    return ins, outs, net._last_logits


def propagate(
    net,
    clean: torch.Tensor,
    perturbed: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float64,
    keep: bool = False,
) -> Propagation:
    """Propagated perturbations after the stem and every residual unit.

    Args:
        net: the :class:`~linstab.network.Network`.
        clean: ``(B, 3, H, W)`` (or ``(3, H, W)``) clean images in [0, 1].
        perturbed: perturbed images, same shape, in [0, 1].
        dtype: float32 or float64 (the forward passes run in it; float64 is needed to see
            tiny perturbations above round-off).
        keep: keep the per-unit input differences (needed for linear predictions).

    Raises:
        ValueError: for mismatched shapes or images outside [0, 1].
        TypeError: for a dtype other than float32/float64.
    """
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    xc = check_images(clean, name="clean")
    xp = check_images(perturbed, name="perturbed")
    if xc.shape != xp.shape:
        raise ValueError(f"perturbed: expected shape {tuple(xc.shape)} like clean, got {tuple(xp.shape)}")
    b = xc.shape[0]
    ins, outs, logits = _unit_io(net, torch.cat([xc.to(dtype), xp.to(dtype)]), dtype)
    maps = [ins[0], *outs]
    diffs = [(m[b:] - m[:b]) for m in maps]
    norms = torch.stack([d.flatten(1).norm(dim=1) for d in diffs], 1).cpu()
    numel = [int(m[0].numel()) for m in maps]
    input_norm = (xp.to(dtype) - xc.to(dtype)).flatten(1).norm(dim=1).cpu()
    prev = torch.cat([input_norm[:, None], norms[:, :-1]], 1)
    in_diffs = [(i[b:] - i[:b]) for i in ins]
    units = net.units
    return Propagation(
        addresses=["stem", *[u.address for u in units]],
        stages=[0, *[u.stage for u in units]],
        indices=[0, *[u.index for u in units]],
        kinds=["stem", *[u.kind for u in units]],
        numel=numel,
        input_norm=input_norm,
        norms=norms,
        normalized=norms / torch.tensor(numel, dtype=norms.dtype).sqrt(),
        growth=norms / prev,
        in_norms=torch.stack([d.flatten(1).norm(dim=1) for d in in_diffs], 1).cpu(),
        clean_pred=logits[:b].argmax(1).cpu(),
        pert_pred=logits[b:].argmax(1).cpu(),
        dtype=dtype,
        in_diffs=in_diffs if keep else None,
    )


# ============================================================================================
# singular vectors and eq. (1)
# ============================================================================================
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


def right_singular(op, k: int | None = None, *, seed: int = 0) -> RightSingular:
    """Right singular vectors of a unit Jacobian: all (``k=None``) or the top ``k``.

    All vectors come from a dense float64 SVD (practical up to n_in ~ 4096 on a CPU: about a
    minute or two); ``k`` uses the iterative top-k solver of :mod:`linstab.spectra` (the
    operator's dtype; linearize in float64 for accurate vectors). When
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
    if k is not None and (not isinstance(k, int) or k < 1):
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
        import warnings

        why = err if isinstance(err, str) else f"max | ||J v_i|| - s_i | / s_1 = {err:.2e}"
        warnings.warn(
            f"singular vectors of {getattr(op, 'address', 'operator')} failed the check ({why}); "
            "using linstab's internal solver",
            RuntimeWarning,
            stacklevel=2,
        )
        values, V = _fallback_right(op, kk, seed=seed)
        conv, method = True, method + "-fallback"
    if exact:
        return RightSingular(values, V, complete=True, method=method, tail_bound=0.0, converged=conv)
    return RightSingular(
        values, V, complete=False, method=method, tail_bound=float(values[-1]), converged=conv
    )


def _right_singular(op, k: int | None, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(values (m,), V (n_in, m), converged)``, descending; ``k=None``: all (dense SVD).

    The single switch point to the singular value solver (:func:`linstab.spectra.spectrum`:
    dense SVD for ``"exact"``, restarted block Krylov to a 1e-8 relative residual in float64
    for ``"topk"``).
    """
    import warnings

    from .spectra import spectrum

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
    c = V.shape[1]
    JV = op._matmat(V.T.reshape(c, *op.in_shape).to(op.dtype)).reshape(c, -1).to(torch.float64)
    return max(orth, float((JV.norm(dim=1) - values).abs().max()) / s1)


def _fallback_right(op, k: int | None, *, seed: int = 0, depth: int = 6, oversample: int = 8):
    """Internal solver: dense SVD (``k=None`` or small operators), else randomized block Krylov.

    Block Krylov: ``K = [Q_0, ..., Q_depth]`` (block size ``k + oversample``, each block
    orthogonalized twice against the previous ones) and Rayleigh-Ritz with ``J K``. Returns
    ``(values, V)`` in float64.
    """
    n_out, n_in = op.shape
    dt = torch.float64
    b = min((k or n_in) + oversample, n_in)
    if k is None or b * (depth + 1) >= n_in:
        M = op.materialize(dt)
        _, S, Vh = torch.linalg.svd(M, full_matrices=False)
        m = S.numel() if k is None else k
        return S[:m], Vh[:m].T.contiguous()

    def J(Q: torch.Tensor) -> torch.Tensor:  # (n_in, c) -> (n_out, c)
        c = Q.shape[1]
        return op._matmat(Q.T.reshape(c, *op.in_shape).to(op.dtype)).reshape(c, -1).T.to(dt)

    def JT(W: torch.Tensor) -> torch.Tensor:
        c = W.shape[1]
        return op._rmatmat(W.T.reshape(c, *op.out_shape).to(op.dtype)).reshape(c, -1).T.to(dt)

    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n_in, b, generator=g, dtype=dt))
    basis, images = [Q], []
    for _ in range(depth):
        JQ = J(basis[-1])
        images.append(JQ)
        Z = JT(JQ)
        for _ in range(2):
            for B in basis:
                Z = Z - B @ (B.T @ Z)
        Q, _ = torch.linalg.qr(Z)
        basis.append(Q)
    images.append(J(basis[-1]))
    K, JK = torch.cat(basis, 1), torch.cat(images, 1)
    G = JK.T @ JK
    lam, W = torch.linalg.eigh(0.5 * (G + G.T))
    order = torch.argsort(lam, descending=True)[:k]
    return lam[order].clamp_min(0).sqrt(), K @ W[:, order]


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
    """
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


# ============================================================================================
# analysis
# ============================================================================================
def resolve_units(net, spec) -> list[str]:
    """Unit addresses from a spec.

    Accepts ``"all"``, ``"none"``/``None``, ``"last"`` (the last stage), a stage number
    (``"3"``), addresses (``"3.7"``), or a comma list / sequence of those.

    Raises:
        ValueError: for malformed specs or units outside the network.
    """
    from .network import parse_unit

    if spec is None:
        return []
    tokens = [t.strip() for t in spec.split(",")] if isinstance(spec, str) else [str(t) for t in spec]
    out: list[str] = []
    nstages = len(net.stages)
    for t in tokens:
        if t == "" or t == "none":
            continue
        if t == "all":
            out.extend(u.address for u in net.units)
        elif t == "last":
            out.extend(u.address for u in net.stages[-1])
        elif t.isdigit():
            s = int(t)
            if not 1 <= s <= nstages:
                raise ValueError(f"stage must be in 1..{nstages}, got {s} in {spec!r}")
            out.extend(u.address for u in net.stages[s - 1])
        else:
            s, k = parse_unit(t)
            out.append(net.unit(s, k).address)
    seen: set[str] = set()
    return [a for a in out if not (a in seen or seen.add(a))]


def default_projection_units(net, stage: int | None = None) -> list[int]:
    """Unit indices for Figure 4 (bottom): the paper's 12, 14, 16, 18 of 18 mapped to the stage.

    For ``n`` units per stage: ``round(n * f)`` for ``f = 12/18, 14/18, 16/18, 1``, deduplicated
    (ResNet-56, ``n = 9``: 6, 7, 8, 9; ResNet-110: 12, 14, 16, 18; ResNet-20: 2, 3).
    """
    stage = stage or len(net.stages)
    if not 1 <= stage <= len(net.stages):
        raise ValueError(f"stage must be in 1..{len(net.stages)}, got {stage}")
    n = len(net.stages[stage - 1])
    return sorted({max(1, min(n, int(math.floor(n * f + 0.5)))) for f in (12 / 18, 14 / 18, 16 / 18, 1.0)})


def _parse_perturbations(spec) -> list[str]:
    if isinstance(spec, str):
        spec = [t.strip() for t in spec.split(",") if t.strip()]
    names: list[str] = []
    for t in spec:
        if t == "all":
            names.extend(PERTURBATIONS)
        elif t in PERTURBATIONS:
            names.append(t)
        else:
            raise ValueError(f"unknown perturbation {t!r}; expected one of {', '.join(PERTURBATIONS)} or all")
    if not names:
        raise ValueError("no perturbation given; expected e.g. fgsm, random or all")
    seen: set[str] = set()
    return [n for n in names if not (n in seen or seen.add(n))]


@dataclass
class PropagationAnalysis:
    """The result of :func:`analyze`.

    Attributes:
        network: the network's name.
        rows: one dict per image x perturbation x layer (fields :data:`ROW_FIELDS`).
        attacks: per perturbation, one :class:`~linstab.attacks.AttackResult` per image
            (``random`` results carry the noise as ``delta``).
        alphas: ``(image, perturbation, address) -> (alpha, sigma)`` numpy arrays for the
            units asked in ``keep_alphas``.
        settings: the analysis parameters.
    """

    network: str
    rows: list[dict]
    attacks: dict[str, list[AttackResult]]
    alphas: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]
    settings: dict

    def summary(self) -> list[dict]:
        """Per-perturbation summary (see :func:`summarize`)."""
        return summarize(self.rows, self.attacks)

    def write_csv(self, path: str | Path) -> Path:
        """Write :attr:`rows` as CSV."""
        return write_rows(self.rows, path)


def _random_results(
    x: torch.Tensor,
    labels: torch.Tensor,
    norms: dict[int, float],
    seed: int,
    net,
) -> list[AttackResult]:
    out: list[AttackResult] = []
    clean_pred = net.predict(x).argmax(1)
    todo = {}
    for i in range(x.shape[0]):
        if i in norms and int(clean_pred[i]) == int(labels[i]):
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
            todo[i] = random_perturbation(x[i], norms[i], generator=g)
    preds = {}
    if todo:
        keys = sorted(todo)
        xa = torch.stack([(x[i].double() + todo[i]) for i in keys])
        p = net.predict(xa.float().clamp(0, 1)).argmax(1)
        preds = {i: int(p[j]) for j, i in enumerate(keys)}
    for i in range(x.shape[0]):
        lab, cp = int(labels[i]), int(clean_pred[i])
        if i not in todo:
            note = "no reference norm (reference attack failed)"
            if cp != lab:
                note = "clean image misclassified: skipped"
            out.append(AttackResult.unattacked("random", i, x[i], lab, cp, note))
            continue
        d = todo[i]
        out.append(
            AttackResult(
                attack="random",
                index=i,
                x=x[i],
                x_adv=x[i].double() + d,
                delta=d,
                label=lab,
                clean_pred=cp,
                adv_pred=preds[i],
                flipped=preds[i] != lab,
                success=True,
                l2=float(d.norm()),
                linf=float(d.abs().max()),
                params={"seed": seed, "norm": norms[i]},
            )
        )
    return out


def analyze(
    net,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    perturbations: str | Sequence[str] = ("fgsm", "random"),
    *,
    ids: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float64,
    k: int | None = 64,
    spectral_units: str | Sequence[str] | None = "all",
    keep_alphas: str | Sequence[str] | None = None,
    seed: int = 0,
    random_ref: str = "fgsm",
    random_norm: float | None = None,
    attack_params: dict[str, dict] | None = None,
    progress: bool = True,
) -> PropagationAnalysis:
    """Attack, propagate and predict: the data of Figures 3-4 and the per-attack summary.

    For every image and perturbation: the propagated perturbation after the stem and every
    unit (raw and normalized norm, growth ratio), the exact linear prediction of every unit,
    and -- at the units in ``spectral_units`` -- the projections on the right singular vectors
    of the unit Jacobian at the clean image (computed once per image and unit, shared by all
    perturbations), eq. (1) with its bounds and the top-10 alignment.

    Args:
        net: the :class:`~linstab.network.Network`.
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)`` true labels (``None``: the model's predictions are taken as labels).
        perturbations: names from :data:`PERTURBATIONS`, a comma list, or ``"all"``.
        ids: a name per image for the output (default ``"0", "1", ...``).
        dtype: dtype of propagation and predictions (float64 recommended).
        k: singular vectors per unit (``None``: all, dense SVD -- only for small units).
        spectral_units: units with projections (see :func:`resolve_units`; ``None``: none).
        keep_alphas: units whose ``alpha`` and ``sigma`` arrays are kept (for Figure 4).
        seed: seed of the random perturbations (per image: ``seed * 1000003 + position``) and
            of PGD's random start and the top-k start blocks.
        random_ref: attack whose per-image L2 norm the random perturbation copies.
        random_norm: a fixed L2 norm for the random perturbations instead.
        attack_params: per-attack keyword arguments, e.g. ``{"pgd": {"eps": 0.01}}``.
        progress: show progress bars.

    Raises:
        ValueError: for unknown perturbation or attack names, bad unit specs, bad norms.
        TypeError: for a bad dtype.
    """
    from tqdm.auto import tqdm

    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    names = _parse_perturbations(perturbations)
    if random_ref not in ATTACKS:
        raise ValueError(f"random_ref: expected one of {', '.join(ATTACKS)}, got {random_ref!r}")
    if random_norm is not None and not (isinstance(random_norm, (int, float)) and random_norm > 0):
        raise ValueError(f"random_norm: expected a float > 0, got {random_norm!r}")
    attack_params = dict(attack_params or {})
    unknown = sorted(set(attack_params) - set(ATTACKS))
    if unknown:
        raise ValueError(
            f"attack_params: unknown attacks {unknown}; expected keys among {', '.join(ATTACKS)}"
        )
    x = check_images(images)
    if labels is None:
        labels = net.predict(x).argmax(1)
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels: expected {x.shape[0]} labels, got {labels.shape[0]}")
    ids = [str(i) for i in (ids if ids is not None else range(x.shape[0]))]
    if len(ids) != x.shape[0]:
        raise ValueError(f"ids: expected {x.shape[0]} ids, got {len(ids)}")
    spectral = set(resolve_units(net, spectral_units))
    keep = set(resolve_units(net, keep_alphas))

    # ---- perturbations ----------------------------------------------------------------------
    results: dict[str, list[AttackResult]] = {}
    ref_needed = "random" in names and random_norm is None
    for name in [n for n in ATTACKS if n in names or (ref_needed and n == random_ref)]:
        if progress:
            print(f"attack {name} on {x.shape[0]} images ...", flush=True)
        prm = {"progress": progress, **attack_params.get(name, {})}
        if name == "pgd":
            prm.setdefault("seed", seed)
        results[name] = run_attack(net, x, labels, name, **prm)
    if "random" in names:
        if random_norm is not None:
            norms = dict.fromkeys(range(x.shape[0]), float(random_norm))
        else:
            norms = {r.index: r.l2 for r in results[random_ref] if r.success}
        results["random"] = _random_results(x, labels, norms, seed, net)
    results = {n: results[n] for n in names}

    # ---- propagation --------------------------------------------------------------------------
    props: dict[str, tuple[list[int], Propagation]] = {}
    for name in names:
        pos = [r.index for r in results[name] if r.success]
        if not pos:
            continue
        pert = torch.stack([results[name][i].x_adv for i in pos]).to(dtype)
        props[name] = (pos, propagate(net, x[pos], pert, dtype=dtype, keep=True))

    # ---- predictions, per image (Jacobians and singular vectors shared by perturbations) ----
    rows: list[dict] = []
    alphas: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    by_image: dict[int, list[tuple[str, int]]] = {}
    for name, (pos, _) in props.items():
        for j, i in enumerate(pos):
            by_image.setdefault(i, []).append((name, j))
    units = net.units
    bar = tqdm(total=len(by_image) * len(units), desc="propagation", unit="unit", disable=not progress)
    for i in sorted(by_image):
        lin = net.linearize(x[i], dtype)
        preds: dict[str, list[UnitPrediction | None]] = {name: [None] for name, _ in by_image[i]}
        for u in units:
            op = lin.unit(u.stage, u.index)
            spec = right_singular(op, k, seed=seed) if u.address in spectral else None
            for name, j in by_image[i]:
                dx = props[name][1].in_diffs[units.index(u)][j]
                p = predict_unit(op, dx, spec)
                preds[name].append(p)
                if p.alpha is not None and u.address in keep:
                    alphas[(ids[i], name, u.address)] = (p.alpha.cpu().numpy(), p.sigma.cpu().numpy())
            bar.update(1)
        for name, j in by_image[i]:
            rows.extend(_rows_for(ids[i], i, name, results[name][i], props[name][1], j, preds[name]))
    bar.close()
    order = {n: r for r, n in enumerate(names)}
    rows.sort(key=lambda r: (order[r["perturbation"]], r["image_pos"], r["position"]))
    settings = {
        "network": net.name,
        "perturbations": names,
        "dtype": str(dtype).replace("torch.", ""),
        "k": k,
        "spectral_units": sorted(spectral, key=lambda a: [int(t) for t in a.split(".")]),
        "seed": seed,
        "random_ref": random_ref,
        "random_norm": random_norm,
        "attack_params": {n: {kk: vv for kk, vv in v.items()} for n, v in attack_params.items()},
        "images": ids,
    }
    return PropagationAnalysis(net.name, rows, results, alphas, settings)


def _nan(v: float) -> float:
    return float(v) if v is not None else math.nan


def _rows_for(image_id, i, name, res: AttackResult, prop: Propagation, j, preds) -> list[dict]:
    out = []
    for pos in range(len(prop.addresses)):
        norm = float(prop.norms[j, pos])
        row = {
            "image": image_id,
            "image_pos": i,
            "perturbation": name,
            "label": res.label,
            "clean_pred": int(prop.clean_pred[j]),
            "pert_pred": int(prop.pert_pred[j]),
            "flipped": int(prop.pert_pred[j]) != res.label,
            "eps": _nan(res.eps),
            "pert_l2": float(prop.input_norm[j]),
            "pert_linf": res.linf,
            "position": pos,
            "address": prop.addresses[pos],
            "stage": prop.stages[pos],
            "index": prop.indices[pos],
            "kind": prop.kinds[pos],
            "numel": prop.numel[pos],
            "norm": norm,
            "normalized": float(prop.normalized[j, pos]),
            "growth": float(prop.growth[j, pos]),
        }
        p = preds[pos]
        if p is None:
            row.update(in_norm=float(prop.input_norm[j]))
        else:
            inn = p.in_norm
            row.update(
                in_norm=inn,
                lin_pred=p.lin_pred,
                lin_ratio=p.lin_pred / inn if inn > 0 else math.nan,
                lin_rel_err=abs(p.lin_pred - norm) / norm if norm > 0 else math.nan,
                eq1=p.eq1,
                eq1_upper=p.eq1_upper,
                eq1_ratio=p.eq1 / inn if inn > 0 else math.nan,
                eq1_upper_ratio=p.eq1_upper / inn if inn > 0 else math.nan,
                n_vectors=p.n_vectors,
                spectrum=p.spectrum,
                captured=p.captured,
                align10=p.align10,
                sigma1=float(p.sigma[0]) if p.sigma is not None else math.nan,
                sigma_last=float(p.sigma[-1]) if p.sigma is not None else math.nan,
            )
        out.append({f: row.get(f, math.nan if f not in ("spectrum",) else "") for f in ROW_FIELDS})
    return out


# ============================================================================================
# summary
# ============================================================================================
def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _gmean(vals: list[float]) -> float:
    v = [x for x in vals if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else math.nan


def _mean(vals: list[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def _median(vals: list[float]) -> float:
    v = sorted(x for x in vals if math.isfinite(x))
    if not v:
        return math.nan
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def summarize(rows: list[dict], attacks: dict[str, list[AttackResult]] | None = None) -> list[dict]:
    """Per-perturbation summary: the numbers that say whether the final-stage jump is attack-specific.

    Per perturbation (means over its images):

    * ``images``: images analysed; ``attempted``/``success_rate`` (with ``attacks``);
    * ``l2``, ``linf``: mean input perturbation norms;
    * ``growth_s{S}``: geometric mean of the per-unit growth ratio over stage ``S``'s units;
    * ``last3_growth``: the same over the last 3 units of the last stage;
      ``last3_vs_stage = last3_growth / growth_s{last}`` (> 1: a jump at the end of the stage);
    * ``last3_gain`` (``_min``, ``_max``): per image, the amplification over the last 3 units
      ``||dx_L|| / ||dx_{L-3}||``; geometric mean, smallest and largest over the images;
    * ``end_normalized``: mean normalized propagated perturbation after the last unit;
    * ``align10_last_stage``, ``align10_last3``, ``align10_rest``: mean top-10 alignment over the
      last stage, its last 3 units and its other units (where computed);
      ``align10_uniform``: ``10 / n`` of the last stage (a random direction's expectation);
    * ``lin_rel_err``: median ``|lin_pred - norm| / norm`` over all units; ``lin_rel_err_last3``
      over the last 3 units.

    Args:
        rows: rows of :func:`analyze` (or read back with :func:`read_rows`).
        attacks: attack results, for the success rate.
    """
    names: list[str] = []
    for r in rows:
        if r["perturbation"] not in names:
            names.append(r["perturbation"])
    out = []
    for name in names:
        rr = [r for r in rows if r["perturbation"] == name]
        units = [r for r in rr if r["address"] != "stem"]
        stages = sorted({int(_f(r["stage"])) for r in units})
        last = stages[-1] if stages else 0
        last_units = sorted({int(_f(r["index"])) for r in units if int(_f(r["stage"])) == last})
        last3 = set(last_units[-3:])
        imgs = sorted({str(r["image"]) for r in rr})
        per_img = {im: [r for r in rr if str(r["image"]) == im] for im in imgs}
        first = [p[0] for p in per_img.values()]
        s: dict = {"perturbation": name, "images": len(imgs)}
        if attacks is not None and name in attacks:
            att = [a for a in attacks[name] if not a.skipped]
            s["attempted"] = len(att)
            s["success_rate"] = sum(a.success for a in att) / len(att) if att else math.nan
        s["l2"] = _mean([_f(r["pert_l2"]) for r in first])
        s["linf"] = _mean([_f(r["pert_linf"]) for r in first])
        for st in stages:
            s[f"growth_s{st}"] = _gmean([_f(r["growth"]) for r in units if int(_f(r["stage"])) == st])
        in_last = [r for r in units if int(_f(r["stage"])) == last]
        l3 = [r for r in in_last if int(_f(r["index"])) in last3]
        rest = [r for r in in_last if int(_f(r["index"])) not in last3]
        s["last3_growth"] = _gmean([_f(r["growth"]) for r in l3])
        s["last3_vs_stage"] = s["last3_growth"] / s.get(f"growth_s{last}", math.nan) if stages else math.nan
        gains = [
            math.prod(
                _f(r["growth"]) for r in p if int(_f(r["stage"])) == last and int(_f(r["index"])) in last3
            )
            for p in per_img.values()
        ]
        s["last3_gain"] = _gmean(gains)
        s["last3_gain_min"] = min(gains) if gains else math.nan
        s["last3_gain_max"] = max(gains) if gains else math.nan
        s["end_normalized"] = _mean([_f(p[-1]["normalized"]) for p in per_img.values()])
        s["align10_last_stage"] = _mean([_f(r["align10"]) for r in in_last])
        s["align10_last3"] = _mean([_f(r["align10"]) for r in l3])
        s["align10_rest"] = _mean([_f(r["align10"]) for r in rest])
        n_last = [int(_f(r["numel"])) for r in in_last]
        s["align10_uniform"] = 10 / n_last[0] if n_last else math.nan
        s["lin_rel_err"] = _median([_f(r["lin_rel_err"]) for r in units])
        s["lin_rel_err_last3"] = _median([_f(r["lin_rel_err"]) for r in l3])
        out.append(s)
    return out


def summary_table(summary: list[dict]) -> str:
    """A Markdown table of :func:`summarize`'s output (one row per perturbation)."""
    if not summary:
        return "(no results)"
    keys: list[str] = []
    for s in summary:
        keys.extend(k for k in s if k not in keys)

    def fmt(v) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    for s in summary:
        lines.append("| " + " | ".join(fmt(s.get(k, math.nan)) for k in keys) + " |")
    return "\n".join(lines)


# ============================================================================================
# CSV
# ============================================================================================
def write_rows(rows: list[dict], path: str | Path) -> Path:
    """Write rows as CSV (NaN written as empty fields)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROW_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return path


_INT_FIELDS = {
    "image_pos",
    "label",
    "clean_pred",
    "pert_pred",
    "position",
    "stage",
    "index",
    "numel",
    "n_vectors",
}
_STR_FIELDS = {"image", "perturbation", "address", "kind", "spectrum"}


def read_rows(path: str | Path) -> list[dict]:
    """Read a CSV written by :func:`write_rows` (numbers parsed, empty fields as NaN)."""
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if set(ROW_FIELDS) - set(r):
                missing = sorted(set(ROW_FIELDS) - set(r))
                raise ValueError(f"{path}: not a propagation CSV (missing columns {missing[:4]}...)")
            row: dict = {}
            for k, v in r.items():
                if k in _STR_FIELDS:
                    row[k] = v
                elif k == "flipped":
                    row[k] = v == "True"
                elif k in _INT_FIELDS:
                    row[k] = int(float(v)) if v not in ("", "nan") else -1
                else:
                    row[k] = float(v) if v != "" else math.nan
            rows.append(row)
    return rows


def _write_summary(summary: list[dict], path: str | Path, settings: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        clean = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
            for s in summary
        ]
        path.write_text(json.dumps({"settings": settings or {}, "summary": clean}, indent=1))
    else:
        keys: list[str] = []
        for s in summary:
            keys.extend(k for k in s if k not in keys)
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            for s in summary:
                w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()})
    return path


# ============================================================================================
# CLI
# ============================================================================================
def _parse_k(text: str) -> int | None:
    if str(text).strip().lower() == "all":
        return None
    try:
        k = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--k expects a positive int or 'all', got {text!r}") from exc
    if k < 1:
        raise argparse.ArgumentTypeError(f"--k expects a positive int or 'all', got {text!r}")
    return k


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0, help="seed of random perturbations, PGD start (default 0)")
    p.add_argument(
        "--random-ref",
        default="fgsm",
        choices=list(ATTACKS),
        help="attack whose per-image L2 norm the random perturbation copies (default fgsm)",
    )
    p.add_argument("--random-norm", type=float, default=None, help="fixed L2 norm for random instead")
    p.add_argument(
        "--pgd-eps",
        type=float,
        default=None,
        help="fixed L-inf radius for PGD (default: minimal flipping radius, searched)",
    )
    p.add_argument("--cw-steps", type=int, default=200, help="CW Adam steps per constant (default 200)")
    p.add_argument("--cw-search-steps", type=int, default=5, help="CW binary-search steps (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _attack_params(args) -> dict[str, dict]:
    prm: dict[str, dict] = {"cw": {"steps": args.cw_steps, "binary_search_steps": args.cw_search_steps}}
    if args.pgd_eps is not None:
        prm["pgd"] = {"eps": args.pgd_eps}
    return prm


def _images_labels(args):
    from .cli import images_from_args

    x, y, ids = images_from_args(args)
    return x, y, ids


def _cmd_propagate(args) -> int:
    from .cli import network_from_args, parse_dtype

    net = network_from_args(args)
    x, y, ids = _images_labels(args)
    if y is None:
        print("no labels for these images: the model's predictions are used as labels")
    res = analyze(
        net,
        x,
        y,
        args.attack,
        ids=ids,
        dtype=parse_dtype(args.dtype),
        k=args.k,
        spectral_units=args.spectral_units,
        seed=args.seed,
        random_ref=args.random_ref,
        random_norm=args.random_norm,
        attack_params=_attack_params(args),
        progress=not args.no_progress,
    )
    for name, rr in res.attacks.items():
        for r in rr:
            if not r.success:
                print(f"{name} image {ids[r.index]}: {r.note}")
    path = res.write_csv(args.out)
    print(f"wrote {path} ({len(res.rows)} rows)")
    summary = res.summary()
    if args.summary:
        spath = _write_summary(summary, args.summary, res.settings)
        print(f"wrote {spath}")
    if args.attacks_json:
        data = {n: [r.to_dict() for r in rr] for n, rr in res.attacks.items()}
        Path(args.attacks_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.attacks_json).write_text(json.dumps(data, indent=1))
    print(summary_table(summary))
    return 0


def add_parser(sub) -> None:
    """Register ``linstab propagate``."""
    from .cli import add_image_args, add_model_args

    p = sub.add_parser(
        "propagate",
        help="propagated perturbations (random vs adversarial), projections, eq. (1) (paper Sec. 3.3)",
        description="Attack images, propagate clean and perturbed images through the network, and "
        "compare the growth of the propagated perturbation with linear predictions. Writes one CSV "
        "row per image x perturbation x layer and prints a per-perturbation summary.",
    )
    add_model_args(p)
    add_image_args(p, multiple=True, default="0-9")
    p.add_argument(
        "--attack",
        default="fgsm,random",
        help=f"comma list of {', '.join(PERTURBATIONS)}, or all (default fgsm,random)",
    )
    p.add_argument(
        "--k",
        type=_parse_k,
        default=64,
        help="right singular vectors per unit: an int (top-k) or all (dense SVD) (default 64)",
    )
    p.add_argument(
        "--spectral-units",
        default="all",
        help="units with projections/eq. (1): all, none, last (last stage), a stage number, "
        "addresses like 3.7,3.8 (default all)",
    )
    p.add_argument("--out", required=True, help="CSV file of rows")
    p.add_argument("--summary", default=None, help="summary table file (.json or .csv)")
    p.add_argument("--attacks-json", default=None, help="write per-image attack results (JSON)")
    _add_common(p)
    p.set_defaults(func=_cmd_propagate)


def _cmd_figure_propagation(args) -> int:
    from .cli import network_from_args, parse_dtype
    from .plots import save_figure
    from .plots.perturbations import propagation_figure

    wanted = _parse_perturbations(args.attack)
    if args.from_csv:
        from .cli import parse_index_spec

        rows = read_rows(args.from_csv)
        present = {int(r["image_pos"]) for r in rows}
        keep = set(parse_index_spec(args.images, max(present, default=0) + 21)) & present
        if not keep:
            raise ValueError(f"--images {args.images!r} selects none of the CSV's images {sorted(present)}")
        rows = [r for r in rows if int(r["image_pos"]) in keep]
        title = Path(args.from_csv).stem
    else:
        net = network_from_args(args)
        x, y, ids = _images_labels(args)
        names = ["random", *[n for n in wanted if n != "random"]]
        res = analyze(
            net,
            x,
            y,
            names,
            ids=ids,
            dtype=parse_dtype(args.dtype),
            spectral_units=None,
            seed=args.seed,
            random_ref=args.random_ref,
            random_norm=args.random_norm,
            attack_params=_attack_params(args),
            progress=not args.no_progress,
        )
        rows = res.rows
        title = net.name
    order = ["random", *[n for n in wanted if n != "random"]]
    fig = propagation_figure(rows, order, log=args.log, title=title)
    for path in save_figure(fig, args.out):
        print(f"wrote {path}")
    return 0


def _cmd_figure_projections(args) -> int:
    from .cli import network_from_args, parse_dtype
    from .plots import save_figure
    from .plots.perturbations import projections_figure

    net = network_from_args(args)
    x, y, ids = _images_labels(args)
    stage = args.stage or len(net.stages)
    if not 1 <= stage <= len(net.stages):
        raise ValueError(f"--stage must be in 1..{len(net.stages)}, got {stage}")
    if args.units:
        idx = [int(t) for t in args.units.split(",") if t.strip()]
    else:
        idx = default_projection_units(net, stage)
        print(f"units of stage {stage} (default for {len(net.stages[stage - 1])} units per stage): {idx}")
    addrs = [net.unit(stage, i).address for i in idx]
    name = _parse_perturbations(args.attack)
    if len(name) != 1 or name[0] == "random":
        raise ValueError(f"--attack takes one attack of {', '.join(ATTACKS)}, got {args.attack!r}")
    res = analyze(
        net,
        x,
        y,
        [name[0], "random"],
        ids=ids,
        dtype=parse_dtype(args.dtype),
        k=args.k,
        spectral_units=addrs,
        keep_alphas=addrs,
        seed=args.seed,
        random_ref=name[0],
        random_norm=args.random_norm,
        attack_params=_attack_params(args),
        progress=not args.no_progress,
    )
    fig = projections_figure(res.rows, res.alphas, stage=stage, units=addrs, attack=name[0], title=net.name)
    for path in save_figure(fig, args.out):
        print(f"wrote {path}")
    print(summary_table(res.summary()))
    return 0


def add_figure_parser(figsub) -> None:
    """Register ``linstab figure propagation`` (Figure 3) and ``linstab figure projections`` (Figure 4)."""
    from .cli import add_image_args, add_model_args

    p = figsub.add_parser(
        "propagation",
        help="Figure 3: normalized propagated perturbations per unit, random (top) vs adversarial",
    )
    add_model_args(p)
    add_image_args(p, multiple=True, default="0-9")
    p.add_argument("--attack", default="fgsm", help="attack(s) for the lower rows (comma list; default fgsm)")
    p.add_argument(
        "--from-csv",
        default=None,
        help="draw from a 'linstab propagate' CSV instead of computing (--images then selects "
        "positions in that CSV, default 0-9)",
    )
    p.add_argument("--log", action="store_true", help="logarithmic y axis")
    p.add_argument("--out", required=True, help="output path (PNG and SVG are written)")
    _add_common(p)
    p.set_defaults(func=_cmd_figure_propagation)

    p = figsub.add_parser(
        "projections",
        help="Figure 4: propagated perturbation in a stage, predicted vs actual growth, |alpha_i| vs i",
    )
    add_model_args(p)
    add_image_args(p, multiple=True, default="0")
    p.add_argument("--attack", default="fgsm", help="the adversarial attack (default fgsm)")
    p.add_argument("--stage", type=int, default=None, help="stage (default: the last)")
    p.add_argument(
        "--units",
        default=None,
        help="unit indices in the stage for the bottom row, e.g. 6,7,8,9 (default: the paper's "
        "12,14,16,18 of 18 mapped to the stage length; ResNet-56: 6,7,8,9)",
    )
    p.add_argument(
        "--k",
        type=_parse_k,
        default=None,
        help="singular vectors for the bottom row: all (dense SVD, default) or an int",
    )
    p.add_argument("--out", required=True, help="output path (PNG and SVG are written)")
    _add_common(p)
    p.set_defaults(func=_cmd_figure_projections)
