"""The propagate and figure commands (linstab.cli.perturbations) end to end on a tiny network."""

from __future__ import annotations

import json

import pytest
import torch
from factories import make_net, tiny_image

import linstab.cli
import linstab.cli.common
from linstab.analyses import perturbations as P

FAST_ATTACKS = {
    "pgd": {"steps": 10, "rtol": 0.05},
    "cw": {"steps": 50, "binary_search_steps": 3, "initial_const": 1.0},
}


@pytest.fixture(scope="module")
def net():
    return make_net("option-A")


@pytest.fixture(scope="module")
def images():
    return torch.stack([tiny_image(s) for s in range(4)])


@pytest.fixture
def tiny_cli(monkeypatch, net, images):
    y = net.predict(images).argmax(1)
    monkeypatch.setattr(linstab.cli.common, "network_from_args", lambda args: net)
    monkeypatch.setattr(
        linstab.cli.common,
        "images_from_args",
        lambda args, net=None: (images, y, [f"t{i}" for i in range(images.shape[0])]),
    )


def test_cli_propagate_and_figures(tiny_cli, tmp_path, capsys):
    out, summ = tmp_path / "r.csv", tmp_path / "s.json"
    rc = linstab.cli.main(
        ["propagate", "--attack", "fgsm,random", "--k", "8", "--spectral-units", "last",
         "--out", str(out), "--summary", str(summ), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "| perturbation |" in text and "| fgsm |" in text
    rows = P.read_rows(out)
    assert {r["perturbation"] for r in rows} == {"fgsm", "random"}
    data = json.loads(summ.read_text())
    assert [s["perturbation"] for s in data["summary"]] == ["fgsm", "random"]
    assert data["settings"]["k"] == 8
    rc = linstab.cli.main(["figure", "propagation", "--from-csv", str(out), "--out", str(tmp_path / "f3")])
    assert rc == 0
    assert (tmp_path / "f3.png").stat().st_size > 0 and (tmp_path / "f3.svg").exists()
    capsys.readouterr()
    # an attack the CSV does not hold is an error, not a figure without it
    rc = linstab.cli.main(
        ["figure", "propagation", "--from-csv", str(out), "--attack", "pgd", "--out", str(tmp_path / "f5")]
    )
    assert rc == 2 and "does not hold" in capsys.readouterr().err
    assert not (tmp_path / "f5.png").exists()
    rc = linstab.cli.main(
        ["figure", "projections", "--units", "1,2", "--k", "all", "--out", str(tmp_path / "f4.png"),
         "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    assert (tmp_path / "f4.png").stat().st_size > 0 and (tmp_path / "f4.svg").exists()


def test_cli_errors(tiny_cli, tmp_path, capsys):
    rc = linstab.cli.main(
        ["propagate", "--attack", "jsma", "--out", str(tmp_path / "x.csv"), "--no-progress"]
    )
    assert rc == 2
    assert "unknown perturbation 'jsma'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        linstab.cli.main(["propagate", "--k", "zero", "--out", str(tmp_path / "x.csv")])
    for flag in ("--cw-steps", "--cw-search-steps"):
        with pytest.raises(SystemExit):
            linstab.cli.main(["propagate", "--attack", "cw", flag, "0", "--out", str(tmp_path / "x.csv")])
        assert "expected an integer >= 1" in capsys.readouterr().err
    # a stage number is checked, also 0 (it is not "the default stage")
    rc = linstab.cli.main(["figure", "projections", "--stage", "0", "--out", str(tmp_path / "p.png")])
    assert rc == 2 and "--stage must be in 1..3, got 0" in capsys.readouterr().err
    rc = linstab.cli.main(["figure", "projections", "--units", "a,b", "--out", str(tmp_path / "p.png")])
    assert rc == 2 and "--units: expected unit numbers" in capsys.readouterr().err
    # output files under a file, or that are folders, are refused before any work
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    cases = (
        ("--summary", afile / "s.json", "is a file, not a folder"),
        ("--attacks-json", tmp_path, "is a folder"),
        ("--out", afile / "r.csv", "is a file, not a folder"),
        ("--summary", tmp_path / "s.txt", "expected a file ending in .json or .csv"),  # CSV in a .txt before
    )
    for flag, path, why in cases:
        args = ["propagate", "--attack", "fgsm", "--out", str(tmp_path / "x.csv"), flag, str(path)]
        with pytest.raises(SystemExit):
            linstab.cli.main(args)
        assert why in capsys.readouterr().err
