"""Networks of other than 3 input channels (grayscale): the whole Python API, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import make_gray_net, make_net

import linstab
from linstab.analyses import attacks
from linstab.analyses.perturbations import analyze
from linstab.analyses.propagation import random_perturbation
from linstab.analyses.taylor import jacobian_test
from linstab.data import load_images
from linstab.report import ReportConfig, build_report
from linstab.spectra import bands, count_from_values, spectrum


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


@pytest.fixture(scope="module")
def gray():
    return make_gray_net(seed=1)


def _gray_images(n: int, hw: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, hw, hw), generator=torch.Generator().manual_seed(seed))


def test_gray_network_predicts_and_refuses_rgb_images(gray):
    x = _gray_images(3)
    assert gray.predict(x).shape == (3, 10)
    assert gray.predict(x[0]).shape == (1, 10)
    with pytest.raises(ValueError, match=r"expected shape \(1, H, W\) or \(N, 1, H, W\) with 1 channel"):
        gray.predict(torch.rand(2, 3, 8, 8))
    rgb = make_net("option-B")
    with pytest.raises(ValueError, match="3 RGB channels"):
        rgb.predict(x)
    with pytest.raises(ValueError, match="with 1 channel"):
        gray.linearize(torch.rand(3, 8, 8))


def test_bad_input_shapes_and_normalization_are_refused():
    model = make_gray_net().model
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        linstab.Network(model, input_shape=(0, 8, 8))
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        linstab.Network(model, input_shape=(1, 8))
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        linstab.Network(model, input_shape=(True, 8, 8))
    net = linstab.Network(model, input_shape=tuple(np.array([1, 8, 8])))  # numpy ints are fine
    assert net.input_shape == (1, 8, 8) and all(type(v) is int for v in net.input_shape)
    with pytest.raises(ValueError):
        linstab.Network(model, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), input_shape=(1, 8, 8))


def test_gray_unit_spectra_and_band_counts_match_dense_twins(gray):
    lin = gray.linearize(_gray_images(1)[0], dtype=torch.float64)
    for u in gray.units:
        op = lin.unit(u.stage, u.index)
        dense = torch.linalg.svdvals(op.materialize().to(torch.float64))
        res = spectrum(op, "exact", dtype=torch.float64)
        got = torch.sort(torch.as_tensor(res.values, dtype=torch.float64), descending=True).values
        assert torch.allclose(got, dense[: got.numel()], atol=1e-9, rtol=1e-9)
        bc = bands(op)
        c = bc.counts
        assert (c["above"], c["plateau"], c["below"], c["zero"]) == count_from_values(
            dense, min(op.shape), 0.99, 1.01, bc.zero_tol
        )


def test_gray_jacobian_test_and_random_perturbation(gray):
    x = _gray_images(1, seed=3)[0]
    res = jacobian_test(gray, x, 1, 1)
    assert res.passed
    d = random_perturbation(x, 0.1, seed=0)
    assert d.shape == x.shape
    assert abs(float(d.norm()) - 0.1) < 1e-12


def test_gray_attacks_and_propagation(gray):
    x = _gray_images(4, seed=5)
    y = gray.predict(x).argmax(1)
    grid = torch.from_numpy(np.geomspace(1e-3, 0.5, 16))
    for res in (
        attacks.fgsm(gray, x, y, eps_grid=grid),
        attacks.pgd(gray, x, y, steps=10, eps_grid=grid, rtol=0.05),
    ):
        ok = [r for r in res if r.success]
        assert ok
        for r in ok:
            assert r.x_adv.shape == (1, 8, 8)
            assert int(gray.predict(r.x_adv).argmax(1)) != int(y[r.index])
    with pytest.raises(ValueError, match="with 1 channel"):
        attacks.fgsm(gray, torch.rand(2, 3, 8, 8), y[:2])
    out = analyze(gray, x[:2], y[:2], ("fgsm", "random"), seed=0)
    assert {r["perturbation"] for r in out.rows} >= {"fgsm", "random"}


def test_gray_array_files_load_and_a_report_runs_on_them(gray, tmp_path):
    x = _gray_images(2, hw=16, seed=7).numpy()
    np.save(tmp_path / "last.npy", np.transpose(x, (0, 2, 3, 1)))  # channels last
    np.save(tmp_path / "first.npy", x)
    for f in ("last.npy", "first.npy"):
        got = load_images(tmp_path / f)
        assert got.shape == (2, 1, 16, 16)
        assert torch.equal(got, torch.from_numpy(x))
    net = make_gray_net(seed=1, hw=16)
    cfg = ReportConfig(
        models=[],
        images=str(tmp_path / "first.npy"),
        quick=True,
        out=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        progress=False,
        workers=1,
    )
    index = build_report(cfg, ("jacobian", "dynamics"), nets=[net])
    assert index.is_file()
    # RGB images for a grayscale network: refused before any work
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32))
    rgb = str(tmp_path / "rgb.npy")
    cfg2 = ReportConfig(models=[], images=rgb, quick=True, out=tmp_path / "o2", cache_dir=tmp_path / "c2")
    with pytest.raises(ValueError, match="report's images for gray1.*with 1 channel"):
        build_report(cfg2, ("jacobian",), nets=[net])
    assert not (tmp_path / "o2" / "index.html").exists()
