"""Options that clash or would be ignored, and addresses outside the network, are refused with a
one-line message (exit status 2) before any work."""

from __future__ import annotations

import pytest
from factories import make_net, tiny_image

import linstab.cli
import linstab.cli.common as common
import linstab.cli.perturbations as cli_p
from linstab.analyses import perturbations as P


@pytest.fixture(scope="module")
def net():
    return make_net("option-A")


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the options were checked")


def _error(argv, capsys) -> str:
    """Run ``linstab ARGV``, expect exit status 2 and return its one-line message."""
    try:
        rc = linstab.cli.main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


def test_two_outputs_on_one_file_are_refused(monkeypatch, tmp_path, capsys):
    # --attacks-json on the --out CSV replaced the rows with the attack JSON
    monkeypatch.setattr(common, "network_from_args", _no_work)
    out = tmp_path / "r.csv"
    for flag, path in (("--attacks-json", out), ("--summary", tmp_path / "." / "r.csv")):
        err = _error(["propagate", "--out", str(out), flag, str(path)], capsys)
        assert f"--out and {flag} would both write" in err and err.count("\n") == 1
    # figure bands: --csv on one of the figure's files (--out F writes F.png and F.svg)
    monkeypatch.setattr(common, "images_from_args", _no_work)
    for out, csv in (("f", "f.png"), ("f.png", "f.svg")):
        err = _error(["figure", "bands", "--out", str(tmp_path / out), "--csv", str(tmp_path / csv)], capsys)
        assert "--csv and --out would both write" in err
    assert not list(tmp_path.iterdir())


def test_models_of_one_name_are_refused(monkeypatch, tmp_path, capsys):
    # figure bands keyed its rows by the model's name: two networks of one name drew as one
    monkeypatch.setattr(common, "load_model", lambda name, weights=None: make_net("option-A", seed=len(name)))
    err = _error(["figure", "bands", "--model", "a", "--model", "bb", "--out", str(tmp_path / "f")], capsys)
    assert "--model a and --model bb are both the network 'option-A'" in err
    err = _error(["figure", "scree", "--model", "a", "--model", "a", "--out", str(tmp_path / "f")], capsys)
    assert "--model a is given twice" in err


def test_figure_without_a_kind_names_the_kinds(capsys):
    err = _error(["figure"], capsys)
    assert "linstab figure: error: the following arguments are required: FIGURE" in err


def test_addresses_outside_the_network_are_refused_before_the_images(monkeypatch, net, tmp_path, capsys):
    monkeypatch.setattr(common, "network_from_args", lambda args: net)
    monkeypatch.setattr(common, "images_from_args", _no_work)
    out = str(tmp_path / "s.npz")
    for argv, why in (
        (["spectrum", "--unit", "5.1", "--out", out], "stage must be in 1..3, got 5"),
        (["spectrum", "--unit", "2.9", "--out", out], "unit of stage 2 must be in 1..2, got 9"),
        (["spectrum", "--stage", "4", "--out", out], "stage must be in 1..3, got 4"),
        (["jacobian-test", "--unit", "3.3"], "unit of stage 3 must be in 1..2, got 3"),
    ):
        assert why in _error(argv, capsys)


def test_projections_take_one_adversarial_attack_before_any_work(monkeypatch, tmp_path, capsys):
    # random:3 and the controls slipped through and failed later naming 'random_ref'
    monkeypatch.setattr(common, "network_from_args", _no_work)
    for attack in ("random:3", "bim", "random", "fgsm,pgd"):
        err = _error(["figure", "projections", "--attack", attack, "--out", str(tmp_path / "f")], capsys)
        assert f"--attack: expected one attack of fgsm, pgd, deepfool, cw, got {attack!r}" in err


def test_figure_from_csv_refuses_ignored_options_and_empty_files(monkeypatch, net, tmp_path, capsys):
    x = tiny_image(0)[None]
    monkeypatch.setattr(common, "network_from_args", lambda args: net)
    monkeypatch.setattr(
        common, "images_from_args", lambda args, net=None: (x, net.predict(x).argmax(1), ["t"])
    )
    csv = tmp_path / "r.csv"
    rc = linstab.cli.main(
        ["propagate", "--attack", "random", "--random-norm", "0.1", "--spectral-units", "none",
         "--out", str(csv), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    capsys.readouterr()
    monkeypatch.setattr(common, "network_from_args", _no_work)
    fig = [
        "figure",
        "propagation",
        "--attack",
        "random",
        "--from-csv",
        str(csv),
        "--out",
        str(tmp_path / "f"),
    ]
    for extra in (["--model", "resnet56-akamaster"], ["--seed", "3"], ["--pgd-eps", "0.1"]):
        err = _error([*fig, *extra], capsys)
        assert f"{extra[0]} does not apply with --from-csv (it would be ignored" in err
    # a run in which no perturbation succeeded writes the header only
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    assert P.read_rows(csv) == []
    assert "holds no rows (its header only" in _error(fig, capsys)
    # rows of two runs in one file drew zigzag lines
    monkeypatch.setattr(cli_p, "read_rows", lambda path: rows + rows)
    rows = [
        {"perturbation": "random", "image": "t", "image_pos": 0, "position": 0, "address": "stem",
         "stage": 0, "normalized": 1.0, "pert_l2": 0.1}
    ]  # fmt: skip
    assert "rows 0 and 1 are both random of image t at layer stem" in _error(fig, capsys)
    assert not list(tmp_path.glob("f*"))
