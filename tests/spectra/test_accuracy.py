"""Error bounds of computed singular values: float32 routes against float64, band fractions
from bounded values."""

from __future__ import annotations

import pytest
import torch
from factories import NET_KINDS, make_net, tiny_image

from linstab.spectra.accuracy import band_fraction_bounds, error_from_squared, value_error
from linstab.spectra.spectrum import spectrum


@pytest.mark.parametrize("kind", [k for k in NET_KINDS if k != "pytorchcv"])
def test_float32_values_within_their_bound_on_every_unit_and_stage(kind):
    net = make_net(kind, seed=3)
    x = tiny_image(3)
    lin64 = net.linearize(x, dtype=torch.float64)
    lin32 = net.linearize(x, dtype=torch.float32)
    ops = [(lin64.unit(u.stage, u.index), lin64.unit(u.stage, u.index)) for u in net.units]
    ops += [(lin64.stage(s), lin32.stage(s)) for s in range(1, len(net.stages) + 1)]
    for op64, op32 in ops:
        ref = spectrum(op64, "exact", dtype=torch.float64).values
        res = spectrum(op32, "exact", dtype=torch.float32)
        err = value_error(res)
        assert err.shape == res.values.shape
        gap = (res.values.double() - ref).abs()
        assert bool((gap <= err + 1e-12).all()), (res.route, float((gap - err).max()))


def test_error_from_squared():
    s = torch.tensor([0.0, 1e-3, 1.0, 10.0], dtype=torch.float64)
    e = error_from_squared(s, 1e-4)
    assert e[0] == pytest.approx(1e-2)
    assert e[2] == pytest.approx(5e-5, rel=1e-3)
    assert e[3] < e[2] < e[1] <= e[0]
    # every s with |s^2 - s_hat^2| <= delta lies within the bound
    for sh, b in zip(s.tolist(), e.tolist(), strict=True):
        lo, hi = max(sh**2 - 1e-4, 0) ** 0.5, (sh**2 + 1e-4) ** 0.5
        assert sh - lo <= b + 1e-15 and hi - sh <= b + 1e-15


def test_band_fraction_bounds():
    s = torch.tensor([0.5, 0.985, 0.995, 1.0, 1.009, 1.02, 3.0])
    assert band_fraction_bounds(s, torch.zeros(7)) == (3 / 7, 3 / 7)
    low, high = band_fraction_bounds(s, torch.full((7,), 0.006))
    assert (low, high) == (1 / 7, 4 / 7)
    assert band_fraction_bounds(s, torch.zeros(7), n=14) == (3 / 14, 3 / 14)
    with pytest.raises(ValueError, match="same shape"):
        band_fraction_bounds(s, torch.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        band_fraction_bounds(torch.zeros(0), torch.zeros(0))


def test_iterative_values_use_residuals():
    net = make_net("option-B", seed=1)
    op = net.linearize(tiny_image(1), dtype=torch.float64).unit(1, 1)
    res = spectrum(op, "topk", k=4, solver="block-krylov")
    err = value_error(res)
    ref = spectrum(op, "exact").values[:4]
    assert bool(torch.isfinite(err).all()) and bool(((res.values - ref).abs() <= err + 1e-12).all())
    routed = spectrum(op, "topk", k=4)  # a small operator: solver "auto" takes an exact route
    assert routed.route != "block-krylov" and routed.residuals is None
    bound = value_error(routed)  # the exact route's bound, not inf for want of residuals
    assert bool(torch.isfinite(bound).all()) and bool(((routed.values - ref).abs() <= bound + 1e-15).all())


@pytest.mark.slow
def test_resnet20_float32_panels_within_their_bound_and_exact_fractions():
    """Figure 1's routes on a trained network (resnet20-linstab, packaged): float32 values within
    their stated bound of the float64 ones, and the band fraction of the exact counts equal to
    the one the float64 values give (no value within rounding of an edge here)."""
    from linstab.analyses.network_spectra import FULL_PLAN, Panel, PanelPlan, linearizer, panel_spectrum
    from linstab.data.selection import select_images
    from linstab.network.loading import load_model
    from linstab.spectra.bands import bands

    net = load_model("resnet20-linstab")
    lin = linearizer(net, select_images("0").images[0])
    ref_plan = PanelPlan(dtype=torch.float64)
    # one panel of each kind (the stage-2 units, twice the size, take the same routes)
    panels = [Panel("unit", 3, "unit 3.3", "3.3"), Panel("downsampling", 3, "unit 3.1", "3.1")]
    panels += [Panel("stage", 3, "stage 3")]
    for p in panels:
        new, ref = panel_spectrum(lin, p, FULL_PLAN), panel_spectrum(lin, p, ref_plan)
        assert new.dtype == torch.float32 and ref.dtype == torch.float64
        gap = (new.values.double() - ref.values).abs()
        assert bool((gap <= value_error(new)).all()), (p.label, float((gap - value_error(new)).max()))
        if p.address is not None:
            s, k = (int(v) for v in p.address.split("."))
            bc = bands(lin(torch.float64).unit(s, k), exact_ones=False)
            frac = float(((ref.values >= 0.99) & (ref.values <= 1.01)).double().mean())
            assert bc.fractions["plateau"] == pytest.approx(frac, abs=0.5 / bc.n)
