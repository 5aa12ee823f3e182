"""Sparse unit factors (linstab.operators.factors) against impulse responses and the operators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import dense, dense_sv, n_alpha, randomize_bn, tiny_image
from torch import nn

from linstab import spectra as S
from linstab.models import ConvBlock
from linstab.operators import ConvBNLinearization, factors
from linstab.spectra import reduction

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


@pytest.mark.parametrize(
    "geom",
    [
        dict(cin=4, cout=6, k=3, stride=1, pad=1, dil=1, groups=1),
        dict(cin=4, cout=6, k=3, stride=2, pad=1, dil=1, groups=2),
        dict(cin=4, cout=4, k=3, stride=1, pad=2, dil=2, groups=1),
        dict(cin=4, cout=8, k=1, stride=2, pad=0, dil=1, groups=1),
    ],
)
def test_conv_columns_match_impulses(geom):
    torch.manual_seed(0)
    blk = ConvBlock(geom["cin"], geom["cout"], geom["k"], geom["stride"], geom["pad"])
    blk.conv = nn.Conv2d(
        geom["cin"],
        geom["cout"],
        geom["k"],
        geom["stride"],
        geom["pad"],
        dilation=geom["dil"],
        groups=geom["groups"],
        bias=False,
    )
    randomize_bn(blk, 1)
    blk = blk.to(F64).eval()
    z = torch.rand((1, geom["cin"], 7, 7), dtype=F64)
    lin = ConvBNLinearization(blk, z, F64)
    n_in = geom["cin"] * 49
    n_out = geom["cout"] * lin.out_hw[0] * lin.out_hw[1]
    idx = np.arange(n_in)
    fwd = factors.conv_columns(lin, idx, transpose=False).toarray()
    ref = lin.conv(torch.eye(n_in, dtype=F64).reshape(n_in, geom["cin"], 7, 7)).reshape(n_in, -1).T
    assert np.abs(fwd - ref.numpy()).max() < 1e-14
    idx = np.arange(n_out)
    bwd = factors.conv_columns(lin, idx, transpose=True).toarray()
    E = torch.eye(n_out, dtype=F64).reshape(n_out, geom["cout"], *lin.out_hw)
    ref = lin.conv_t(E).reshape(n_out, -1).T
    assert np.abs(bwd - ref.numpy()).max() < 1e-14


def test_unit_factors_reproduce_every_unit(nets):
    for net in nets.values():
        lin = net.linearize(tiny_image(3), dtype=F64)
        for u in net.units:
            op = lin.unit(u.stage, u.index)
            f = S.unit_factors(op)
            assert f is not None, (net.name, u.address)
            Jf = reduction.factors_js(f).toarray()
            Jd = dense(op).numpy()
            assert np.abs(Jf - Jd[f.out_active]).max() < 1e-13
            assert np.abs(Jd[np.setdiff1d(np.arange(op.shape[0]), f.out_active)]).max() == 0
            fop = S.factor_operator(op)
            assert torch.allclose(dense(fop), torch.from_numpy(Jd), atol=1e-13, rtol=0)


def test_bottleneck_factors_through_narrowest_layer(nets):
    net = nets["tv-bottleneck"]
    lin = net.linearize(tiny_image(1), dtype=F64)
    op = lin.unit(1, 2)
    counts = [int(b.deriv.sum()) for b in op.blocks if b.deriv is not None]
    f = S.unit_factors(op)
    assert f.r == min(counts) and len(op.blocks) == 3
    res = S.spectrum(op, "exact")
    sd = dense_sv(op)
    assert res.route == "structured"
    assert (res.values - sd).abs().max() < 1e-10
    assert res.n_exact_ones == n_alpha(sd)
