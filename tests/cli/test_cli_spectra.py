"""The spectrum, bands and figure commands (linstab.cli.spectra) end to end on a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import tiny_image

from linstab import spectra as S

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def test_cli_commands(nets, tmp_path, monkeypatch):
    import linstab.cli as cli
    import linstab.cli.common as common

    net = nets["option-A"]
    monkeypatch.setattr(common, "network_from_args", lambda args: net)
    imgs = torch.stack([tiny_image(i) for i in range(3)])
    monkeypatch.setattr(
        common,
        "images_from_args",
        lambda args, net=None: (
            imgs[:1] if getattr(args, "images", None) is None else imgs,
            None,
            ["a", "b", "c"],
        ),
    )
    monkeypatch.setattr(common, "networks_from_args", lambda args: [net])
    out = tmp_path / "u.npz"
    assert cli.main(["spectrum", "--unit", "1.2", "--out", str(out)]) == 0
    back = S.SpectrumResult.load(out)
    assert back.info["component"] == "unit 1.2" and back.k == 256
    assert back.info["state_sha256"] == net.state_sha256() and back.info["images"] == ["a"]  # provenance
    assert back.info["model"] == net.name and back.info["linstab"]
    assert (
        cli.main(
            [
                "spectrum",
                "--stage",
                "3",
                "--method",
                "topk",
                "--k",
                "4",
                "--vectors",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "s.npz") as z:
        assert z["u"].shape == (64, 4) and z["v"].shape == (128, 4)
    assert cli.main(["bands", "--out", str(tmp_path / "b.csv")]) == 0
    lines = (tmp_path / "b.csv").read_text().splitlines()
    assert len(lines) == 1 + len(net.units)
    assert lines[0].startswith("model,weights_sha256,image,")  # whose counts
    assert lines[1].startswith(f"{net.name},,a,")  # a network built here: no weights file
    f2 = str(tmp_path / "f2")
    assert cli.main(["figure", "bands", "--out", f2, "--csv", f2 + ".csv"]) == 0
    assert (tmp_path / "f2.png").exists() and (tmp_path / "f2.svg").exists()
    assert (
        cli.main(
            ["figure", "scree", "--out", str(tmp_path / "f1"), "--stage-method", "topk", "--stage-k", "8"]
        )
        == 0
    )
    assert (tmp_path / "f1.png").exists() and (tmp_path / "f1.svg").exists()
    assert cli.main(["spectrum", "--unit", "1.2", "--method", "topk", "--k", "0", "--out", str(out)]) == 2


def test_cli_spectrum_out_suffix_is_checked_before_any_work(tiny_cli, tmp_path, capsys, monkeypatch):
    """Values and vectors go to .npz (appended to a bare name); a .json or .csv name for them is
    refused before the network is even built; the estimates also write .json."""
    import linstab.cli as cli
    import linstab.cli.common as common

    assert cli.main(["spectrum", "--unit", "1.2", "--out", str(tmp_path / "bare")]) == 0
    assert (tmp_path / "bare.npz").is_file() and "bare.npz" in capsys.readouterr().out
    est = ["spectrum", "--unit", "1.2", "--method", "bands-estimate", "--probes", "4", "--out"]
    assert cli.main([*est, str(tmp_path / "e")]) == 0
    assert (tmp_path / "e.npz").is_file() and "e.npz" in capsys.readouterr().out

    def no_network(args):
        raise AssertionError("built the network before checking --out")

    monkeypatch.setattr(common, "network_from_args", no_network)
    for method, name in (("exact", "v.json"), ("topk", "v.csv"), ("density", "d.csv")):
        assert cli.main(["spectrum", "--unit", "1.2", "--method", method, "--out", str(tmp_path / name)]) == 2
        assert "--out" in capsys.readouterr().err and not (tmp_path / name).exists()


@pytest.fixture
def tiny_cli(nets, monkeypatch):
    """The CLI's network and images replaced by a tiny option-B network and one image."""
    import linstab.cli.common as common

    net = nets["option-B"]
    img = tiny_image(3)[None]
    monkeypatch.setattr(common, "network_from_args", lambda args: net)
    monkeypatch.setattr(common, "images_from_args", lambda args, net=None: (img, None, ["t"]))
    return net, img


def test_cli_estimates_cover_the_exact_counts(tiny_cli, tmp_path, capsys):
    import json

    import linstab.cli as cli
    from linstab.io.tables import read_csv

    net, img = tiny_cli
    exact = S.bands(net.linearize(img[0], dtype=F64).unit(1, 2))
    out = tmp_path / "be.json"
    args = ["spectrum", "--unit", "1.2", "--method", "bands-estimate", "--probes", "30", "--seed", "1"]
    assert cli.main([*args, "--out", str(out)]) == 0
    assert "estimated, not exact" in capsys.readouterr().out
    est = json.loads(out.read_text())
    assert est["estimate"] == "bands-estimate" and est["n"] == exact.n
    for band in ("above", "plateau", "below", "zero"):
        assert est[band]["lower"] <= getattr(exact, band) <= est[band]["upper"], band

    dens = tmp_path / "d.npz"
    assert (
        cli.main(["spectrum", "--unit", "1.2", "--method", "density", "--probes", "8", "--out", str(dens)])
        == 0
    )
    with np.load(dens) as z:
        meta = json.loads(str(z["metadata"]))
        assert meta["n_probes"] == 8 and meta["component"] == "unit 1.2"
        assert np.isclose(z["hist"].sum(), exact.n, rtol=0.2)

    csv_path = tmp_path / "b.csv"
    assert cli.main(["bands", "--estimate", "--probes", "30", "--out", str(csv_path)]) == 0
    rows = read_csv(csv_path, required=["address", "above_lower", "above_upper", "n_probes"])
    assert len(rows) == len(net.units) and all(
        float(r["above_lower"]) <= float(r["above_upper"]) for r in rows
    )
    exact_csv = tmp_path / "bx.csv"
    assert cli.main(["bands", "--out", str(exact_csv)]) == 0
    exact_rows = read_csv(exact_csv, required=["address", "n_exact_ones"])
    # the exact-ones column is empty in the same rows (units without the structure) either way
    assert [r["n_exact_ones"] in (None, "") for r in rows] == [
        r["n_exact_ones"] in (None, "") for r in exact_rows
    ]
    assert any(r["n_exact_ones"] in (None, "") for r in rows)
    assert cli.main(["bands", "--estimate", "--probes", "0", "--out", str(csv_path)]) == 2


def test_cli_options_that_would_be_ignored_are_refused(tiny_cli, tmp_path, capsys, monkeypatch):
    """An option that does not apply to the chosen method is an error, not silently ignored;
    bands write CSV only; predict checks label ranges; --beta needs softplus."""
    import linstab.cli as cli
    import linstab.cli.common as common

    out = str(tmp_path / "o.npz")
    cases = [
        (["spectrum", "--unit", "1.2", "--method", "exact", "--solver", "arpack"], "--solver"),
        (["spectrum", "--unit", "1.2", "--method", "exact", "--max-iter", "5"], "--max-iter"),
        (["spectrum", "--unit", "1.2", "--method", "density", "--k", "3"], "--k"),
        (["spectrum", "--unit", "1.2", "--method", "density", "--vectors"], "--vectors"),
        (["spectrum", "--unit", "1.2", "--method", "density", "--thresholds", "0.5", "2"], "--thresholds"),
        (["spectrum", "--unit", "1.2", "--method", "topk", "--probes", "5"], "--probes"),
        (["spectrum", "--unit", "1.2", "--method", "topk", "--zero-tol", "0.1"], "--zero-tol"),
        (["spectrum", "--unit", "1.2", "--method", "bands-estimate", "--solver", "arpack"], "--solver"),
        (["jacobian-test", "--unit", "1.2", "--beta", "5"], "--beta"),
        (["jacobian-test", "--unit", "1.2", "--smooth", "gelu", "--beta", "5"], "--beta"),
    ]
    for argv, flag in cases:
        if argv[0] == "spectrum":
            argv = [*argv, "--out", out]
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert flag in err and "would be ignored" in err, (argv, err)
    for argv, flag in (
        (["bands", "--probes", "30", "--out", str(tmp_path / "b.csv")], "--probes"),
        (["bands", "--seed", "3", "--out", str(tmp_path / "b.csv")], "--seed"),
    ):
        assert cli.main(argv) == 2 and flag in capsys.readouterr().err
    assert cli.main(["bands", "--out", str(tmp_path / "b.json")]) == 2
    assert "writes CSV" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    assert cli.main(["bands", "--out", str(tmp_path / "bare")]) == 0
    assert (tmp_path / "bare.csv").read_text().startswith("model,")
    net, img = tiny_cli
    for bad in ([-1], [net.predict(img).shape[1]]):
        labels = torch.tensor(bad)
        monkeypatch.setattr(common, "images_from_args", lambda args, net=None, y=labels: (img, y, ["t"]))
        assert cli.main(["predict"]) == 2
        assert "expected class indices" in capsys.readouterr().err
