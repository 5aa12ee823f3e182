"""Propagating a perturbation through the units (Section 3.3): random perturbations, differences
of activations, unit selections.

Section 3.3 of the paper, and its open question (does the jump at the end of the last stage
depend on the attack?).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..data.images import check_images
from ..io.validate import is_real
from ..network.view import parse_unit
from .attacks import ATTACKS, CONTROLS

PERTURBATIONS: tuple[str, ...] = (*ATTACKS, "random")
"""The perturbations of ``"all"``: every attack and random noise."""


def random_perturbation(
    image: torch.Tensor, norm: float, *, seed: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform noise with exactly a given L2 norm, keeping ``image + delta`` in [0, 1].

    ``u ~ U[-1, 1]^n``; ``delta = clip(x + s u, 0, 1) - x`` with the scale ``s`` solved (bisection,
    then an exact rescale of the unclipped entries) so that ``||delta||_2 == norm`` to float64
    round-off. Without clipping this is simply ``norm * u / ||u||``.

    Args:
        image: ``(C, H, W)`` in [0, 1] (any number of channels ``C``).
        norm: the requested L2 norm (a finite real > 0, NumPy scalars included; not a bool).
        seed: seed of the noise (ignored when ``generator`` is given).
        generator: a torch generator to draw from.

    Returns:
        ``delta`` of shape ``(3, H, W)``, float64.

    Raises:
        ValueError: for a non-positive or non-finite norm, a batch instead of one image, or a
            norm larger than the image box allows in the drawn direction.
    """
    x = check_images(image, name="image", channels=None)
    if x.shape[0] != 1:
        raise ValueError(f"image: expected one image (C, H, W), got a batch of {x.shape[0]}")
    x = x[0].to(torch.float64)
    if not is_real(norm) or not math.isfinite(norm) or norm <= 0:
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
    xc = net.check_input(clean, name="clean")
    xp = net.check_input(perturbed, name="perturbed")
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


def resolve_units(net, spec) -> list[str]:
    """Unit addresses from a spec.

    Accepts ``"all"``, ``"none"``/``None``, ``"last"`` (the last stage), a stage number
    (``"3"``), addresses (``"3.7"``), or a comma list / sequence of those.

    Raises:
        ValueError: for malformed specs or units outside the network.
    """
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


def random_repeat(name: str) -> int | None:
    """The repeat number of a random perturbation name: 0 for ``"random"``, ``r`` for
    ``"random:r"`` (the noise drawn with seed ``seed + r``), ``None`` for other names.
    """
    if name == "random":
        return 0
    head, _, tail = name.partition(":")
    if head == "random" and tail.isdigit() and int(tail) > 0:
        return int(tail)
    return None


def parse_perturbations(spec) -> list[str]:
    """Perturbation names from ``"all"``, a comma list or a sequence; unknown names are a ValueError.

    ``all`` is :data:`PERTURBATIONS`; the controls of :data:`~linstab.analyses.attacks.CONTROLS`
    and repeats of the random perturbation with other seeds (``random:1``, ``random:2``, ...)
    are accepted by name.
    """
    if isinstance(spec, str):
        spec = [t.strip() for t in spec.split(",") if t.strip()]
    names: list[str] = []
    for t in spec:
        if t == "all":
            names.extend(PERTURBATIONS)
        elif t in PERTURBATIONS or t in CONTROLS or random_repeat(t) is not None:
            names.append(t)
        else:
            raise ValueError(
                f"unknown perturbation {t!r}; expected one of {', '.join((*PERTURBATIONS, *CONTROLS))}, "
                "random:N or all"
            )
    if not names:
        raise ValueError("no perturbation given; expected e.g. fgsm, random or all")
    seen: set[str] = set()
    return [n for n in names if not (n in seen or seen.add(n))]
