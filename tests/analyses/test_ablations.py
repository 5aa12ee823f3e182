"""Ablations: skip scaling and weight interpolation return new modules and honour alpha."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image

import linstab
from linstab.analyses.ablations import (
    Variant,
    interpolate_weights,
    scale_skip,
    scale_skip_network,
    skip_scaling_study,
    variant_point,
    weight_interpolation_study,
)
from linstab.operators import UnitJacobian


def test_scale_skip_returns_copy_and_computes_alpha_skip():
    net = make_net("option-B", seed=2)
    u = net.units[1]
    before = copy.deepcopy(u.canonical.state_dict())
    s = scale_skip(u, 0.5)
    assert s is not u.canonical and s.alpha == 0.5 and u.canonical.alpha == 1.0
    x = torch.rand((2, *u.in_shape))
    with torch.no_grad():
        ref = torch.relu(0.5 * x + u.canonical.body(x))
        assert torch.allclose(s(x), ref, atol=1e-6)
    for k, v in u.canonical.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="finite"):
        scale_skip(u, float("nan"))
    with pytest.raises(TypeError, match="ResidualUnit"):
        scale_skip(torch.nn.Linear(2, 2), 1.0)


@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-basic"])
def test_scaled_unit_jacobian_matches_autodiff(kind):
    net = make_net(kind, seed=3)
    lin = net.linearize(tiny_image(1), dtype=torch.float64)
    from linstab.operators import AutodiffJacobian

    for i, u in enumerate(net.units):
        s = scale_skip(u, 1.3)
        Jc = UnitJacobian(s, lin.inputs[i], torch.float64)
        Ja = AutodiffJacobian(s, lin.inputs[i], torch.float64)
        assert torch.allclose(Jc.materialize(), Ja.materialize(), rtol=1e-10, atol=1e-12)


def test_exact_spectrum_plateau_moves_to_alpha():
    from linstab.spectra import spectrum

    net = make_net("option-A", seed=5)
    lin = net.linearize(tiny_image(2), dtype=torch.float64)
    i = next(i for i, u in enumerate(net.units) if u.kind == "regular")
    u = net.units[i]
    for alpha in (0.5, 1.5):
        J = UnitJacobian(scale_skip(u, alpha), lin.inputs[i], torch.float64)
        res = spectrum(J, method="exact")
        dense = torch.linalg.svdvals(J.materialize())
        assert torch.allclose(res.values.double().cpu(), dense, atol=1e-8)
        n_alpha = int((dense - alpha).abs().lt(1e-9).sum())
        assert res.n_exact_ones is not None and res.n_exact_ones <= n_alpha


def test_interpolate_weights():
    net = make_net("option-B", seed=4)
    u = net.unit(2, 1)  # has a shortcut conv
    orig = copy.deepcopy(u.canonical.state_dict())
    one = interpolate_weights(u, 1.0, seed=0)
    zero = interpolate_weights(u, 0.0, seed=0)
    zero2 = interpolate_weights(u, 0.0, seed=0)
    half = interpolate_weights(u, 0.5, seed=0)
    for k, v in one.state_dict().items():
        assert torch.equal(v, orig[k])
    for (k, v0), v2 in zip(zero.state_dict().items(), zero2.state_dict().values(), strict=True):
        assert torch.equal(v0, v2)  # seeded
        if k.endswith("conv.weight"):
            assert abs(float(v0.norm()) - float(orig[k].norm())) < 1e-4 * float(orig[k].norm())
            assert not torch.equal(v0, orig[k])
            assert torch.allclose(half.state_dict()[k], 0.5 * orig[k] + 0.5 * v0, atol=1e-6)
        else:
            assert torch.equal(v0, orig[k])  # BN parameters and statistics kept
    for k, v in u.canonical.state_dict().items():
        assert torch.equal(v, orig[k])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolate_weights(u, 1.5)


def test_scale_skip_network_copies_model():
    net = make_net("akamaster", seed=1)
    new = scale_skip_network(net, 0.8, ["1.2"])
    assert new.model is not net.model
    assert new.unit(1, 2).canonical.alpha == 0.8 and new.unit(1, 1).canonical.alpha == 1.0
    assert net.unit(1, 2).canonical.alpha == 1.0
    x = tiny_image(0)
    with torch.no_grad():
        a = net.predict(x)
        b = scale_skip_network(net, 1.0).predict(x)
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="stage must be in 1..2, got 9"):
        scale_skip_network(net, 0.8, ["9.9"])
    # a single address as a string was read character by character ("unknown unit '.'")
    one = scale_skip_network(net, 0.8, "1.2")
    assert one.unit(1, 2).canonical.alpha == 0.8 and one.unit(1, 1).canonical.alpha == 1.0
    stage = scale_skip_network(net, 0.8, "2")
    assert all(u.canonical.alpha == 0.8 for u in stage.stages[1])
    assert all(u.canonical.alpha == 1.0 for u in stage.stages[0])


def test_scale_skip_network_keeps_the_units_of_unit_types_at_their_addresses():
    """The copy was rebuilt without the network's ``unit_types``: units of those types vanished
    and the addresses after them moved to other units."""

    from factories import TanhUnit as Odd

    torch.manual_seed(0)
    block = make_net("tv-basic").model.layer1[0]
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), block, Odd(), copy.deepcopy(block))
    net = linstab.Network(model.eval(), input_shape=(3, 8, 8), unit_types=(Odd,))
    new = scale_skip_network(net, 0.5, ["1.1"])
    assert [(u.address, u.name) for u in new.units] == [(u.address, u.name) for u in net.units]
    assert new.unit(1, 1).canonical.alpha == 0.5 and new.unit(1, 3).canonical.alpha == 1.0
    assert isinstance(new.unit(1, 2).module, Odd) and new.unit(1, 2).module is not net.unit(1, 2).module


def test_studies_on_tiny_net():
    net = make_net("option-A", seed=6)
    pts = skip_scaling_study(net, tiny_image(3), 1, 2, alphas=(0.5, 1.0))
    assert [p.value for p in pts] == [0.5, 1.0]
    for p in pts:
        s = np.asarray(p.singular_values)
        assert np.all(np.diff(s) <= 1e-12) and sum(p.bands.values()) == s.size
    tp = weight_interpolation_study(net, tiny_image(3), 1, 2, ts=(0.0, 1.0))
    assert tp[0].parameter == "t" and tp[1].value == 1.0


def test_norm_preserving_interpolation_keeps_the_norm():
    net = make_net("option-B", seed=4)
    u = net.unit(2, 1)
    orig = u.canonical.state_dict()
    plain = interpolate_weights(u, 0.5, seed=1).state_dict()
    kept = interpolate_weights(u, 0.5, seed=1, preserve_norm=True).state_dict()
    for k, v in orig.items():
        if k.endswith("conv.weight"):
            assert float(plain[k].norm()) < 0.9 * float(v.norm())  # about 0.71 ||theta||
            assert float(kept[k].norm()) == pytest.approx(float(v.norm()), rel=1e-5)
            # the same direction as the plain interpolation
            cos = float((kept[k] * plain[k]).sum() / (kept[k].norm() * plain[k].norm()))
            assert cos == pytest.approx(1.0, abs=1e-6)


def test_variants_share_names_and_give_band_counts_around_the_plateau():
    assert Variant("alpha", 1.0).canonical() == Variant("t", 1.0, 3).canonical() == Variant("none", 1.0)
    assert Variant("t-norm", 0.0, 2).canonical() == Variant("t", 0.0, 2)
    assert Variant("alpha", 1.25).plateau == 1.25 and Variant("t", 0.5).plateau == 1.0
    assert Variant("t-norm", 0.5, 1).key == "t-norm=0.5/seed1"
    with pytest.raises(ValueError, match="parameter"):
        Variant("beta", 1.0)
    net = make_net("option-A", seed=6)
    x = tiny_image(3)
    with pytest.raises(ValueError, match="no skip connection is left"):  # was zero_tol's internal message
        variant_point(net, x, 1, 2, Variant("alpha", 0.0))
    for v in (Variant("alpha", 0.5), Variant("t", 0.5, 1), Variant("t-norm", 0.5, 1)):
        p = variant_point(net, x, 1, 2, v, spectrum_values=True)
        q = variant_point(net, x, 1, 2, v)
        s = np.asarray(p.singular_values)
        lo, hi = 0.99 * v.plateau, 1.01 * v.plateau
        assert p.bands["plateau"] == int(((s >= lo) & (s <= hi)).sum())
        assert p.bands == q.bands  # counted by inertia: the same numbers
        assert q.n_plateau_exact is not None and q.extra["n"] == s.size


def test_ablation_points_count_exact_plateau_values_on_rank_deficient_units(monkeypatch):
    """A unit whose reduction is rank deficient: the ablation point keeps its count of values
    exactly the plateau value even where spectrum()'s auto route would take the m x m Gram."""
    from factories import make_unit_module

    from linstab.analyses import ablations
    from linstab.spectra import exact

    monkeypatch.setattr(exact, "GRAM_OVER_PIVOTED", 10.0)  # auto would take the Gram here
    unit, x = make_unit_module(c=4, hw=7, shift=-0.2, seed=5, dependent=True)
    J = UnitJacobian(unit, x, torch.float64)
    s = torch.linalg.svdvals(J.materialize(dtype=torch.float64))
    want = int(((s - 1).abs() < 1e-8).sum())
    p = ablations._study_point(unit, x, torch.float64, "alpha", 1.0, 1.0)
    assert p.n_plateau_exact == want > 0
    assert np.abs(np.sort(p.singular_values) - np.sort(s.numpy())).max() < 1e-9
