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
    _labelled_cli(monkeypatch, net, images, net.predict(images).argmax(1))


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


def _labelled_cli(monkeypatch, net, images, y):
    monkeypatch.setattr(linstab.cli.common, "network_from_args", lambda args: net)
    monkeypatch.setattr(
        linstab.cli.common,
        "images_from_args",
        lambda args, net=None: (images, y, [f"t{i}" for i in range(images.shape[0])]),
    )


def test_cli_attack_settings_are_refused_when_parsed_naming_the_option(monkeypatch, tmp_path, capsys):
    def no_work(args):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(linstab.cli.common, "network_from_args", no_work)
    cases = [
        ("--pgd-eps", "-0.1", r"expected a float in (0, 1], got '-0.1'"),
        ("--pgd-eps", "2", "expected a float in (0, 1]"),
        ("--pgd-eps", "nan", "expected a float in (0, 1]"),
        ("--random-norm", "0", "expected a finite float > 0"),
        ("--random-norm", "inf", "expected a finite float > 0"),
        ("--seed", str(2**70), "expected an integer in"),
        ("--spectral-units", "", "expected all, none, last"),
        ("--spectral-units", " , ", "expected all, none, last"),
    ]
    for flag, value, why in cases:
        args = ["propagate", "--attack", "pgd,random", flag, value, "--out", str(tmp_path / "x.csv")]
        with pytest.raises(SystemExit) as exc:
            linstab.cli.main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: {why}" in err, err
    for cmd in (["figure", "propagation"], ["figure", "projections"]):
        with pytest.raises(SystemExit):
            linstab.cli.main([*cmd, "--pgd-eps", "-0.1", "--out", str(tmp_path / "f.png")])
        assert "argument --pgd-eps: expected a float in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_cli_k_beyond_the_spectrum_and_bad_units_are_refused_before_any_attack(
    tiny_cli, monkeypatch, tmp_path, capsys
):
    import linstab.cli.perturbations as cli_p

    monkeypatch.setattr(cli_p, "analyze", lambda *a, **k: pytest.fail("analyze ran"))
    out = tmp_path / "x.csv"
    cases = [
        (["--k", "99999", "--spectral-units", "last"], "--k: expected an int in 1..64 or all"),
        (["--k", "99999"], "unit 3.1, the smallest of the 6 spectral unit(s)"),  # default: all units
        (["--spectral-units", "9"], "--spectral-units: stage must be in 1..3"),
    ]
    for extra, why in cases:
        rc = linstab.cli.main(["propagate", "--attack", "fgsm", *extra, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and why in err, err
        assert err.count("\n") == 1  # one line
    rc = linstab.cli.main(["figure", "projections", "--units", "1,2", "--k", "99999", "--out", str(out)])
    assert rc == 2 and "--k: expected an int in 1..64" in capsys.readouterr().err
    assert not out.exists()


def test_cli_every_image_misclassified_is_an_error_naming_the_images(
    monkeypatch, net, images, tmp_path, capsys
):
    y = net.predict(images).argmax(1)
    out = tmp_path / "x.csv"
    _labelled_cli(monkeypatch, net, images, (y + 1) % 10)
    rc = linstab.cli.main(["propagate", "--attack", "fgsm,random", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "misclassifies every image, so there is nothing to perturb" in err
    p0, l0 = int(y[0]), (int(y[0]) + 1) % 10
    assert f"t0 (predicted {p0}, label {l0})" in err and "t3 (predicted" in err
    assert not out.exists()
    # some images misclassified: the run goes on and says which are skipped
    partial = y.clone()
    partial[2] = (partial[2] + 1) % 10
    _labelled_cli(monkeypatch, net, images, partial)
    rc = linstab.cli.main(
        ["propagate", "--attack", "random", "--random-norm", "0.1", "--spectral-units", "none",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "note: 1 of 4 images are misclassified" in text and "t2 (predicted" in text
    assert {r["image"] for r in P.read_rows(out)} == {"t0", "t1", "t3"}


def test_cli_warns_when_no_perturbation_succeeded(tiny_cli, tmp_path, capsys):
    out = tmp_path / "x.csv"
    rc = linstab.cli.main(
        ["propagate", "--attack", "pgd", "--pgd-eps", "1e-9", "--spectral-units", "none",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0 and "label not flipped" in captured.out
    assert "warning: no perturbation succeeded on any image" in captured.err
    assert P.read_rows(out) == []
