"""Spectra over every unit of a network (linstab.analyses.network_spectra) and their figures."""

from __future__ import annotations

import pytest
import torch
from factories import tiny_image

from linstab.analyses import network_spectra

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def test_unit_bands_rows_csv_and_figures(nets, tmp_path):
    from linstab.plots.spectra import plot_bands, plot_scree

    net = nets["option-A"]
    rows = network_spectra.unit_bands(net, tiny_image(0), progress=False)
    assert [r["address"] for r in rows] == [u.address for u in net.units]
    for r in rows:
        assert r["above"] + r["plateau"] + r["below"] + r["zero"] == r["n"]
    path = network_spectra.write_bands_csv(rows, tmp_path / "b.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:9] == [
        "model",
        "weights_sha256",
        "image",
        "stage",
        "unit",
        "address",
        "kind",
        "shortcut",
        "n",
    ]
    assert path.read_text().splitlines()[1].startswith(f"{net.name},,,1,1,1.1,")
    assert "n_gt_1.01" in header and "frac_in_0.99_1.01" in header and "n_exact_ones" in header
    written = plot_bands(rows, tmp_path / "fig2")
    assert [p.suffix for p in written] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in written)
    x = torch.stack([tiny_image(0), tiny_image(1)])
    data = network_spectra.scree_data(net, x, unit_index=5, progress=False)
    assert set(data["rows"]) == {"unit", "downsampling", "stage"}
    assert data["rows"]["unit"][0]["address"] == "1.2"  # clipped to the stage length
    assert len(data["rows"]["stage"][2]["spectra"]) == 2
    written = plot_scree([data, data], tmp_path / "fig1.png")
    assert [p.name for p in written] == ["fig1.png", "fig1.svg"]


def test_scree_data_refuses_bad_sizes_before_any_work():
    from factories import make_net

    net = make_net("option-B")
    x = tiny_image()
    for kw in ({"stage_k": 0}, {"max_dense": -1}, {"unit_index": 0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            network_spectra.scree_data(net, x, progress=False, **kw)
    with pytest.raises(ValueError, match="3 RGB channels"):
        network_spectra.scree_data(net, torch.rand(1, 1, 8, 8), progress=False)


def test_unit_bands_refuses_units_the_network_does_not_have(nets, monkeypatch):
    """Unknown addresses (and a single address given as a string) were matched against nothing
    and gave an empty list, silently."""
    net = nets["option-A"]
    calls = []
    monkeypatch.setattr(net, "linearize", lambda *a, **k: calls.append(1))
    for bad in (["9.9"], ["1.1", "1.99"], "4"):
        with pytest.raises(ValueError, match="must be in 1.."):
            network_spectra.unit_bands(net, tiny_image(0), units=bad, progress=False)
    assert not calls  # refused before any work
    monkeypatch.undo()
    rows = network_spectra.unit_bands(net, tiny_image(0), units="2.1", progress=False)
    assert [r["address"] for r in rows] == ["2.1"]
    rows = network_spectra.unit_bands(net, tiny_image(0), units=["2.1", "1.2", "2.1"], progress=False)
    assert [r["address"] for r in rows] == ["1.2", "2.1"]
