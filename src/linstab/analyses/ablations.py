"""Ablations of Section 3.4: skip-connection scaling and weight interpolation.

Both are *transforms that return new modules*: the user's model is never modified.

* :func:`scale_skip` - a copy of a unit (or of a whole network) computing
  ``relu(alpha * S(x) + R(x))``. The closed-form linearization and the structured exact spectrum
  honour ``alpha``: the plateau of singular values exactly 1 becomes a plateau exactly ``alpha``.
* :func:`interpolate_weights` - a copy of a unit whose convolution weights are
  ``t * theta + (1 - t) * eta`` (eq. 3), ``eta`` Gaussian rescaled per tensor to the norm of
  ``theta`` (seeded); batch-norm parameters and statistics kept.

The studies linearize the modified unit at the *same input activation* as the original network
(units before it are unchanged, so this is also the input the modified network would give it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..linalg.results import PLATEAU
from ..models.blocks import ResidualUnit
from ..network.view import Network, UnitInfo
from ..operators.closed_form import UnitJacobian
from ..operators.factors import structured_plan
from ..spectra.bands import bands as band_counts
from ..spectra.bands import count_from_values
from ..spectra.spectrum import spectrum
from .propagation import resolve_units


def _canonical(unit: nn.Module | UnitInfo) -> ResidualUnit:
    if isinstance(unit, UnitInfo):
        if unit.canonical is None:
            raise ValueError(f"unit {unit.address} is not recognized: no transform possible")
        return unit.canonical
    if isinstance(unit, ResidualUnit):
        return unit
    raise TypeError(
        f"expected a linstab ResidualUnit or a UnitInfo (net.unit(s, k)), got {type(unit).__name__}"
    )


def scale_skip(unit: nn.Module | UnitInfo, alpha: float) -> ResidualUnit:
    """A copy of a unit computing ``activ(alpha * S(x) + R(x))``.

    Args:
        unit: a :class:`~linstab.models.ResidualUnit` or a :class:`~linstab.network.UnitInfo`.
        alpha: the skip-connection scale (finite, real).
    """
    alpha = float(alpha)
    if not torch.isfinite(torch.tensor(alpha)):
        raise ValueError(f"alpha must be finite, got {alpha}")
    new = copy.deepcopy(_canonical(unit))
    new.alpha = alpha
    return new


def scale_skip_network(net: Network, alpha: float, units: list[str] | None = None) -> Network:
    """A new :class:`Network` (deep copy) with the skip connections of ``units`` scaled.

    Args:
        net: the network (unchanged).
        alpha: the scale.
        units: unit addresses (``"1.5"``), or a spec of
            :func:`~linstab.analyses.propagation.resolve_units` (``"1.5"``, ``"last"``, a stage,
            a comma list); default all units.

    Raises:
        ValueError: a unit the network does not have.
    """
    chosen = {u.address for u in net.units} if units is None else set(resolve_units(net, units))
    model = copy.deepcopy(net.model)
    for u in net.units:
        if u.address not in chosen:
            continue
        parent_name, _, child = u.name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, scale_skip(u, alpha))
    out = Network(
        model,
        net.mean,
        net.std,
        name=f"{net.name} (alpha={alpha:g})",
        input_shape=net.input_shape,
        unit_types=net.unit_types,  # the same units at the same addresses
    )
    out.spec = net.spec
    return out


def interpolate_weights(
    unit: nn.Module | UnitInfo,
    t: float,
    seed: int = 0,
    include_shortcut: bool = True,
    preserve_norm: bool = False,
) -> ResidualUnit:
    """A copy of a unit with conv weights ``t * theta + (1 - t) * eta`` (paper eq. 3).

    Since ``eta`` has the norm of ``theta`` and is nearly orthogonal to it, the interpolated
    weights are shorter in between (``||theta(1/2)|| ~ 0.71 ||theta||``). ``preserve_norm``
    rescales every interpolated tensor back to ``||theta||`` (the control that tells
    interpolation from shrinking).

    Args:
        unit: a ResidualUnit or UnitInfo.
        t: interpolation weight in [0, 1] (1 = trained weights, 0 = pure noise).
        seed: seed of the noise ``eta`` (one Gaussian tensor per conv, rescaled to ``||theta||``).
        include_shortcut: also interpolate the option-B shortcut convolution.
        preserve_norm: rescale each interpolated tensor to the norm of ``theta``.
    """
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    new = copy.deepcopy(_canonical(unit))
    g = torch.Generator().manual_seed(int(seed))
    convs = [
        m
        for name, m in new.named_modules()
        if isinstance(m, nn.Conv2d) and (include_shortcut or not name.startswith("identity_conv"))
    ]
    with torch.no_grad():
        for conv in convs:
            theta = conv.weight.detach().clone()
            eta = torch.randn(theta.shape, generator=g, dtype=torch.float64).to(theta.dtype)
            eta = eta * (theta.norm() / eta.norm())
            mixed = t * theta + (1.0 - t) * eta
            if preserve_norm and float(mixed.norm()) > 0:
                mixed = mixed * (theta.norm() / mixed.norm())
            conv.weight.copy_(mixed)
    return new


@dataclass
class AblationPoint:
    """Spectrum of a modified unit for one value of the ablation parameter.

    Attributes:
        parameter: ``"alpha"`` or ``"t"``.
        value: the parameter value.
        singular_values: descending singular values (float64 numpy array).
        bands: counts ``{">1.01": .., "[0.99,1.01]": .., "(0,0.99)": .., "0": ..}``.
        n_plateau_exact: singular values exactly equal to the plateau value (``alpha`` for skip
            scaling, 1 for weight interpolation) from the structure, or ``None``.
        plateau_value: that plateau value.
        method: spectrum method used.
    """

    parameter: str
    value: float
    singular_values: object
    bands: dict
    n_plateau_exact: int | None
    plateau_value: float
    method: str
    extra: dict = field(default_factory=dict)


def _exact_route(J: UnitJacobian) -> str:
    """``"structured"`` where the unit allows it (its count of values exactly the plateau
    value is part of every ablation point, also when the reduction is rank deficient), else
    ``"auto"``.
    """
    return "structured" if structured_plan(J)[0] else "auto"


def _study_point(unit: ResidualUnit, x: torch.Tensor, dtype, parameter, value, plateau) -> AblationPoint:
    J = UnitJacobian(unit, x, dtype)
    res = spectrum(J, method="exact", route=_exact_route(J))
    bc = band_counts(J, thresholds=PLATEAU)
    s = res.values.detach().cpu().double().numpy()
    return AblationPoint(
        parameter=parameter,
        value=float(value),
        singular_values=s,
        bands={">1.01": bc.above, "[0.99,1.01]": bc.plateau, "(0,0.99)": bc.below, "0": bc.zero},
        n_plateau_exact=getattr(res, "n_exact_ones", None),
        plateau_value=float(plateau),
        method=res.method,
    )


def _unit_input(
    net: Network, image: torch.Tensor, stage: int, index: int, dtype
) -> tuple[UnitInfo, torch.Tensor]:
    info = net.unit(stage, index)
    lin = net.linearize(image, dtype=dtype)
    return info, lin.inputs[net.units.index(info)]


def skip_scaling_study(
    net: Network,
    image: torch.Tensor,
    stage: int,
    index: int,
    alphas: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5),
    dtype: torch.dtype = torch.float64,
) -> list[AblationPoint]:
    """Spectra of unit ``stage.index`` with its skip connection scaled by each ``alpha``."""
    if not alphas:
        raise ValueError("alphas must not be empty")
    info, x = _unit_input(net, image, stage, index, dtype)
    return [_study_point(scale_skip(info, a), x, dtype, "alpha", a, a) for a in alphas]


def weight_interpolation_study(
    net: Network,
    image: torch.Tensor,
    stage: int,
    index: int,
    ts: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> list[AblationPoint]:
    """Spectra of unit ``stage.index`` with conv weights interpolated towards noise (eq. 3)."""
    if not ts:
        raise ValueError("ts must not be empty")
    info, x = _unit_input(net, image, stage, index, dtype)
    return [_study_point(interpolate_weights(info, t, seed), x, dtype, "t", t, 1.0) for t in ts]


VARIANT_PARAMETERS: tuple[str, ...] = ("none", "alpha", "t", "t-norm")
"""Kinds of unit variants: the trained unit, skip scaling, weight interpolation (eq. 3) and
norm-preserving weight interpolation."""


@dataclass(frozen=True)
class Variant:
    """One modified version of a unit (the trained unit is ``Variant("none", 1.0)``).

    Attributes:
        parameter: one of :data:`VARIANT_PARAMETERS`.
        value: ``alpha`` or ``t``.
        seed: seed of the noise ``eta`` (weight interpolation only).
    """

    parameter: str
    value: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.parameter not in VARIANT_PARAMETERS:
            raise ValueError(f"parameter: expected one of {VARIANT_PARAMETERS}, got {self.parameter!r}")

    def canonical(self) -> Variant:
        """The same unit with one name: ``alpha = 1`` and ``t = 1`` are the trained unit, the
        norm-preserving ``t = 0`` is plain ``t = 0`` (``eta`` already has the norm of ``theta``),
        the seed only matters for interpolation.
        """
        p, v = self.parameter, float(self.value)
        if p == "none" or (p in ("alpha", "t", "t-norm") and v == 1.0):
            return Variant("none", 1.0, 0)
        if p == "t-norm" and v == 0.0:
            return Variant("t", 0.0, self.seed)
        if p == "alpha":
            return Variant("alpha", v, 0)
        return Variant(p, v, self.seed)

    @property
    def plateau(self) -> float:
        """The value of the structural plateau (``|alpha|`` for skip scaling, else 1)."""
        return abs(float(self.value)) if self.parameter == "alpha" else 1.0

    @property
    def key(self) -> str:
        """A short name (``alpha=1.25``, ``t=0.5/seed1``, ``t-norm=0.5/seed0``, ``trained``)."""
        c = self.canonical()
        if c.parameter == "none":
            return "trained"
        if c.parameter == "alpha":
            return f"alpha={c.value:g}"
        return f"{c.parameter}={c.value:g}/seed{c.seed}"


def variant_unit(unit: nn.Module | UnitInfo, variant: Variant) -> ResidualUnit:
    """A copy of ``unit`` modified as ``variant`` says (the trained unit: an unchanged copy)."""
    v = variant.canonical()
    if v.parameter == "alpha":
        return scale_skip(unit, v.value)
    if v.parameter in ("t", "t-norm"):
        return interpolate_weights(unit, v.value, v.seed, preserve_norm=v.parameter == "t-norm")
    return copy.deepcopy(_canonical(unit))


def variant_point(
    net: Network,
    image: torch.Tensor,
    stage: int,
    index: int,
    variant: Variant,
    *,
    spectrum_values: bool = False,
    dtype: torch.dtype = torch.float64,
) -> AblationPoint:
    """Band counts around the plateau value of one variant of unit ``stage.index`` at an image.

    The bands are ``[0.99 p, 1.01 p]`` around the variant's plateau value ``p`` (``|alpha|`` or
    1), counted exactly by inertia, with the number of values exactly ``p`` from the structure
    (``n_plateau_exact``; ``None`` where the route does not expose it). With
    ``spectrum_values`` the exact spectrum is computed instead and the counts taken from it.

    Raises:
        ValueError: for ``alpha = 0`` (no plateau to count around), before any work.
    """
    p = variant.plateau
    if p == 0:  # before any work: [0.99 p, 1.01 p] would be the empty band [0, 0]
        raise ValueError(
            f"{variant.parameter} = {variant.value}: no skip connection is left, so there is no plateau "
            "|alpha| to count around; skip_scaling_study gives the spectra of alpha = 0"
        )
    info, x = _unit_input(net, image, stage, index, dtype)
    J = UnitJacobian(variant_unit(info, variant), x, dtype)
    if spectrum_values:
        res = spectrum(J, method="exact", route=_exact_route(J))
        s = res.values.detach().cpu().double()
        above, plateau, below, zero = count_from_values(s, min(J.shape), 0.99 * p, 1.01 * p, 1e-6)
        counts, n_exact, method, values = (
            (above, plateau, below, zero),
            res.n_exact_ones,
            res.method,
            s.numpy(),
        )
    else:
        bc = band_counts(J, thresholds=(PLATEAU[0] * p, PLATEAU[1] * p))
        counts, n_exact, method, values = (
            (bc.above, bc.plateau, bc.below, bc.zero),
            bc.n_exact_ones,
            bc.route,
            None,
        )
    c = variant.canonical()
    return AblationPoint(
        parameter=variant.parameter,
        value=float(variant.value),
        singular_values=values,
        bands=dict(zip(("above", "plateau", "below", "zero"), counts, strict=True)),
        n_plateau_exact=n_exact,
        plateau_value=p,
        method=method,
        extra={"n": int(min(J.shape)), "seed": c.seed, "variant": variant.key},
    )
