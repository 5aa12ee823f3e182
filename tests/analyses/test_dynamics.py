"""Eigenvalues of unit Jacobians (structured vs dense) and the local Lyapunov spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image

from linstab.analyses.ablations import scale_skip
from linstab.analyses.dynamics import lyapunov_spectrum, unit_eigenvalues
from linstab.operators import UnitJacobian


def match_multisets(a: np.ndarray, b: np.ndarray) -> float:
    """Max distance of a greedy nearest matching between two equal-size complex multisets."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(a[:, None] - b[None, :])
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].max())


@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-bottleneck"])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_structured_eigenvalues_match_dense(kind, alpha):
    net = make_net(kind, seed=11)
    lin = net.linearize(tiny_image(6), dtype=torch.float64)
    checked = 0
    for i, u in enumerate(net.units):
        if u.in_shape != u.out_shape or u.shortcut != "identity":
            continue
        J = UnitJacobian(scale_skip(u, alpha), lin.inputs[i], torch.float64)
        res = unit_eigenvalues(J)
        assert res.method == "structured"
        dense = torch.linalg.eigvals(J.materialize()).numpy()
        assert res.values.shape == dense.shape
        assert match_multisets(res.values, dense) < 1e-8
        assert abs(res.spectral_radius - np.abs(dense).max()) < 1e-10
        # structural counts are exact: that many eigenvalues are (numerically) 0 and alpha
        assert np.sum(np.abs(dense) < 1e-10) >= res.n_zero_structural
        assert np.sum(np.abs(dense - alpha) < 1e-8) >= res.n_alpha_structural
        # spectral radius never exceeds the largest singular value
        smax = float(torch.linalg.matrix_norm(J.materialize(), ord=2))
        assert res.spectral_radius <= smax * (1 + 1e-12)
        checked += 1
    assert checked >= 1


def test_eigenvalue_errors_and_dense_fallback():
    net = make_net("option-B", seed=1)
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        unit_eigenvalues(lin.unit(2, 1))
    with pytest.raises(ValueError, match="method"):
        unit_eigenvalues(lin.unit(1, 1), method="qr")
    with pytest.raises(ValueError, match="batch_size"):  # was range()'s "arg 3 must not be zero"
        unit_eigenvalues(lin.unit(1, 1), batch_size=0)
    Ja = lin.unit(1, 1, "autodiff")
    res = unit_eigenvalues(Ja)
    assert res.method == "dense"
    with pytest.raises(ValueError, match="structured"):
        unit_eigenvalues(Ja, method="structured")
    ref = unit_eigenvalues(lin.unit(1, 1, "closed"))
    assert match_multisets(res.values, ref.values) < 1e-8


def test_lyapunov_spectrum_matches_frame_products():
    net = make_net("option-A", seed=4)
    lin = net.linearize(tiny_image(2), dtype=torch.float64)
    k = 3
    res = lyapunov_spectrum(lin, k=k, seed=5)
    assert res.log_growth.shape == (len(net.units), k)
    assert res.units == [u.address for u in net.units]
    # the product of |R| diagonals equals the volume growth of the frame through the network
    g = torch.Generator().manual_seed(5)
    Q0 = torch.linalg.qr(torch.randn((net.units[0].n_in, k), generator=g, dtype=torch.float64))[0]
    N = lin.network()
    Z = N.matmat(Q0.T.reshape(k, *N.in_shape)).reshape(k, -1).T
    logvol = 0.5 * torch.logdet(Z.T @ Z).item()
    assert abs(res.cumulative[-1].sum() - logvol) < 1e-8
    # top direction: cumulative growth over the network never exceeds log sigma_max
    smax = float(torch.linalg.matrix_norm(N.materialize(), ord=2))
    assert res.cumulative[-1, 0] <= np.log(smax) + 1e-10
    assert set(res.stage_log_growth_top) == {1, 2, 3}
    with pytest.raises(ValueError, match="k must be"):
        lyapunov_spectrum(lin, k=10**6)
    with pytest.raises(TypeError, match="k"):  # was torch.randn's TypeError
        lyapunov_spectrum(lin, k=2.0)
