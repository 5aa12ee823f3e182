"""Unit variants through the cache: the spectra and band counts of a unit with a scaled skip or
interpolated weights, one cache entry per model, image, unit and variant.

Shared by the spectra section (image dependence against architecture changes) and the
ablations section (Figure 5 and its findings), so that a spectrum one needs is computed once.
"""

from __future__ import annotations

import numpy as np

from ..analyses.ablations import AblationPoint, Variant, variant_point
from ..io.cache import tensor_hash
from ..spectra.exact import EXACT_REVISION
from .context import ReportContext

N_DEPENDENCE = (None, 3)
"""Images of the image-dependence test and of the 'not simply scaled' test (full: all, quick)."""
ALPHA_STEP = 1.25
"""The skip scale of the architecture comparator (alpha 1 -> 1.25)."""
T_STEP = 0.75
"""The interpolation weight of the architecture comparator (t 1 -> 0.75)."""


def dependence_images(ctx: ReportContext, n_images: int) -> int:
    """How many of the report's images the image-dependence tests use."""
    k = N_DEPENDENCE[1] if ctx.cfg.quick else N_DEPENDENCE[0]
    return n_images if k is None else min(k, n_images)


def ablation_unit(net):
    """The unit of Figure 5 and of the image-dependence test: the first regular unit of the last
    stage with a closed form (``None`` when the network has none).
    """
    regular = [u for u in net.units if u.kind == "regular" and u.canonical is not None]
    if not regular:
        return None
    addresses = {u.address for u in regular}
    return next((v for v in net.stages[-1] if v.address in addresses), regular[0])


def variant_unit(ctx: ReportContext, net):
    """``(unit, why)``: the :func:`ablation_unit` of ``net`` when the report can compute its whole
    spectrum at every skip scale and weight (at most :attr:`ReportConfig.whole_spectrum_max`
    values), else ``(None, why not)``.
    """
    u = ablation_unit(net)
    if u is None:
        return None, "no regular unit with a closed form"
    limit = ctx.cfg.whole_spectrum_max
    if u.n_out > limit:
        how = "run without --quick" if ctx.cfg.quick else "raise --exact-max"
        return None, (
            f"unit {u.address} has {u.n_out:,} values, more than the {limit:,} whose whole spectra this "
            f"report computes at several skip scales and weights ({how})"
        )
    return u, ""


def _variant_item(ctx: ReportContext, net, image, unit, variant: Variant, spectrum_values: bool):
    """``(kind, parts, compute)`` of a unit variant's cache entry."""
    c = variant.canonical()
    parts = {
        "model": ctx.model_key(net),
        "image": tensor_hash(image),
        "what": "unit-variant",
        "unit": unit.address,
        "variant": [c.parameter, c.value, c.seed],
        "spectrum": spectrum_values,
        "bands": "0.99p-1.01p",
        "dtype": "float64",
        "exact_revision": EXACT_REVISION,
    }

    def compute():
        p = variant_point(net, image, unit.stage, unit.index, c, spectrum_values=spectrum_values)
        arrays = {"values": np.asarray(p.singular_values)} if p.singular_values is not None else {}
        return arrays, {
            "bands": {k: int(v) for k, v in p.bands.items()},
            "n_plateau_exact": None if p.n_plateau_exact is None else int(p.n_plateau_exact),
            "method": p.method,
            "extra": p.extra,
        }

    return "unit-variant", parts, compute


def prefetch_variants(ctx: ReportContext, net, jobs: list[tuple], desc: str) -> None:
    """Compute the missing cache entries of ``jobs`` (``(image, unit, variant, spectrum_values)``)
    with the report's worker processes, so that the :func:`variant_cached` calls that follow
    find them (with the cache disabled, or one worker, this computes nothing ahead). The
    entries computed here count as misses; the lookups that follow count the hits.
    """
    if not ctx.cache.enabled or ctx.cfg.n_workers <= 1:
        return
    items, seen = [], set()
    for image, unit, variant, spectrum_values in jobs:
        kind, parts, compute = _variant_item(ctx, net, image, unit, variant, spectrum_values)
        key = ctx.cache.key(parts)
        if key not in seen:
            seen.add(key)
            items.append((kind, parts, compute))
    bar = ctx.bar(len(items), desc)
    ctx.cache.get_or_compute_many(items, ctx.cfg.n_workers, on_done=bar.update, count_hits=False)
    bar.close()


def variant_cached(
    ctx: ReportContext, net, image, unit, variant: Variant, *, spectrum_values: bool = False
) -> AblationPoint:
    """:func:`~linstab.analyses.ablations.variant_point` of ``unit`` at ``image`` through the cache.

    Args:
        ctx: the report context (cache).
        net: the network.
        image: ``(3, H, W)``.
        unit: a :class:`~linstab.network.UnitInfo`.
        variant: the modification (``alpha = 1`` and ``t = 1`` share the trained unit's entry).
        spectrum_values: compute the exact spectrum (else band counts by inertia).
    """
    c = variant.canonical()
    kind, parts, compute = _variant_item(ctx, net, image, unit, variant, spectrum_values)
    arrays, meta = ctx.cache.get_or_compute(kind, parts, compute)
    return AblationPoint(
        parameter=variant.parameter,
        value=float(variant.value),
        singular_values=arrays.get("values"),
        bands=meta["bands"],
        n_plateau_exact=meta["n_plateau_exact"],
        plateau_value=variant.plateau,
        method=meta["method"],
        extra={**meta["extra"], "seed": c.seed},
    )
