"""``ReportConfig`` and ``build_report`` refuse wrong arguments, unusable folders and foreign
output folders before any work, with what was expected and what arrived; Ctrl-C on the command
line ends without a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from factories import make_net, tiny_image

from linstab.report import ReportConfig, build_report
from linstab.report.build import clean_stale_stages


@pytest.mark.parametrize(
    ("kw", "error", "msg"),
    [
        ({"images": 3}, TypeError, "images must be default-image indices .* got int 3"),
        ({"images": None}, TypeError, "images must be default-image indices"),
        ({"images": np.zeros((2, 3, 8, 8))}, TypeError, "got ndarray array"),
        ({"images": [0.5, 1.7]}, TypeError, "images: each index must be an int >= 0; got float 0.5"),
        ({"images": [True]}, TypeError, "images: each index must be an int >= 0; got bool"),
        ({"images": [-1]}, ValueError, "images: each index must be an int >= 0; got -1"),
        ({"models": "resnet20-linstab"}, TypeError, "models must be a list of model names"),
        ({"models": None}, TypeError, "models must be a list of model names"),
        ({"models": ["a", ""]}, TypeError, "non-empty model names; got ''"),
        ({"attacks": None}, TypeError, "attacks must be a sequence of attack names, got None"),
        ({"attacks": ()}, ValueError, "attacks: expected at least one of fgsm"),  # IndexError after work
        ({"seed": "a"}, TypeError, "seed must be an int >= 0; got str 'a'"),
        ({"seed": 1.5}, TypeError, "seed must be an int >= 0; got float 1.5"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0; got -1"),
        ({"out": None}, TypeError, "out must be a folder path; got None"),
        ({"out": ""}, TypeError, "out must be a folder path; got ''"),
        ({"cache_dir": 5}, TypeError, "cache_dir must be a folder path or None; got 5"),
        ({"sweep_dir": 5}, TypeError, "sweep_dir must be a folder path or None; got 5"),
        ({"quick": "no"}, TypeError, "quick must be True or False; got 'no'"),
        ({"use_cache": 0}, TypeError, "use_cache must be True or False; got 0"),
        ({"progress": None}, TypeError, "progress must be True or False"),
        ({"input_size": 0}, ValueError, "input_size must be an int >= 1 or None; got 0"),
        ({"input_size": "224"}, TypeError, "input_size must be an int >= 1 or None; got str"),
        ({"weights": "w.safetensors"}, TypeError, "weights must be a list of files"),
        ({"weights": [5]}, TypeError, "weights must be a list of files"),
    ],
)
def test_report_config_refuses_wrong_types_and_values(tmp_path, kw, error, msg):
    """These ran into raw errors ("'int' object is not iterable"), a minute of work before a
    cryptic one (seed "a"), or silently did something else: float indices truncated, a model
    name iterated letter by letter, the string "no" taken as True."""
    base = {"models": [], "images": [0], "out": tmp_path / "out"}
    with pytest.raises(error, match=msg):
        ReportConfig(**{**base, **kw})


def test_report_config_takes_paths_and_sequences(tmp_path):
    cfg = ReportConfig(
        models=("m",), images=tmp_path / "x.npy", out=str(tmp_path), cache_dir=str(tmp_path), weights=(None,)
    )
    assert cfg.models == ["m"] and cfg.images == str(tmp_path / "x.npy") and cfg.weights == [None]
    assert isinstance(cfg.out, Path) and isinstance(cfg.cache_dir, Path)
    assert ReportConfig(models=[], images=range(2), attacks=iter(["pgd"])).images == [0, 1]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A tiny network, one image, and a ``_build`` that fails the test if reached."""
    import linstab.report.build as build

    def reached(*a, **k):
        raise AssertionError("the report started its work")

    monkeypatch.setattr(build, "_build", reached)
    images = tmp_path / "images.npy"
    np.save(images, tiny_image(0)[None].numpy())
    cfg = ReportConfig(
        models=[],
        images=str(images),
        quick=True,
        out=tmp_path / "out",
        cache_dir=tmp_path / "c",
        progress=False,
    )
    return cfg, [make_net("option-A", seed=2)]


def test_sections_must_be_names_each_once(setup):
    """A string was split into letters; a section named twice ran twice (two copies in the page
    and in findings.csv)."""
    cfg, nets = setup
    with pytest.raises(TypeError, match="sections must be a sequence of section names"):
        build_report(cfg, "jacobian", nets=nets)
    with pytest.raises(ValueError, match=r"each section once, got \['jacobian', 'jacobian'\]"):
        build_report(cfg, ("jacobian", "jacobian"), nets=nets)


def test_unusable_out_and_cache_folders_are_refused_before_any_work(setup, tmp_path):
    """A cache folder that is a file (or under one) failed at the first result stored, after its
    computation; an out folder under a file failed with a raw ``NotADirectoryError``."""
    from dataclasses import replace

    cfg, nets = setup
    afile = tmp_path / "afile"
    afile.write_text("x")
    for kw, msg in (
        ({"out": afile / "sub"}, "out .*sub': .*afile is a file, not a folder"),
        ({"cache_dir": afile}, "cache_dir .*afile': .*afile is a file, not a folder"),
        ({"cache_dir": afile / "sub"}, "cache_dir .*sub': .*afile is a file, not a folder"),
    ):
        with pytest.raises(ValueError, match=msg):
            build_report(replace(cfg, **kw), ("jacobian",), nets=nets)
    build_report_no_cache = replace(cfg, cache_dir=afile, use_cache=False)  # no cache: not needed
    with pytest.raises(AssertionError, match="started its work"):
        build_report(build_report_no_cache, ("jacobian",), nets=nets)
    if os.path.isdir("/proc/self"):  # a folder no one can write in, not even root
        with pytest.raises(ValueError, match="cannot write in the folder /proc "):
            build_report(replace(cfg, cache_dir=Path("/proc/linstab-test")), ("jacobian",), nets=nets)


def test_a_folder_holding_other_data_is_not_replaced(setup, tmp_path):
    """``--out .`` in a project folder deleted the project's own ``data/`` (a report replaces
    ``data/`` and ``figures/`` whole): a folder with such entries but no earlier linstab report is
    refused; an earlier report's folder is taken."""
    from dataclasses import replace

    cfg, nets = setup
    mine = tmp_path / "project"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "results.csv").write_text("precious")
    with pytest.raises(ValueError, match="holds data but no earlier linstab report"):
        build_report(replace(cfg, out=mine), ("jacobian",), nets=nets)
    (mine / "environment.json").write_text('{"other": 1}')
    with pytest.raises(ValueError, match="holds data but no earlier linstab report"):
        build_report(replace(cfg, out=mine), ("jacobian",), nets=nets)
    assert (mine / "data" / "results.csv").read_text() == "precious"
    (mine / "environment.json").write_text('{"linstab": "0.1.0"}')  # an earlier report's folder
    with pytest.raises(AssertionError, match="started its work"):
        build_report(replace(cfg, out=mine), ("jacobian",), nets=nets)


def test_stale_stages_of_a_folder_with_pattern_characters_are_removed(tmp_path):
    """A report folder named like a glob pattern (``run[1]``) never had a killed run's staging
    folder removed."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".run[1].linstab-partial-{gone.pid}"
    (stale / "data").mkdir(parents=True)
    assert clean_stale_stages(tmp_path / "run[1]") == 1 and not stale.exists()


def test_ctrl_c_ends_the_command_without_a_traceback(tmp_path, monkeypatch, capsys):
    import linstab.cli as cli
    import linstab.cli.report as cli_report

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_report, "build_report", interrupted)
    try:
        rc = cli.main(["report", "--quick", "--out", str(tmp_path / "r"), "--no-progress"])
    except KeyboardInterrupt:
        pytest.fail("the interrupt came out of the command (a traceback)")
    assert rc == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run it again to resume" in err and "Traceback" not in err


def test_one_report_at_a_time_per_folder(setup, tmp_path):
    """Two reports into one folder published their entries at the same time (a page of one
    model beside the data of the other, or a crash in ``rmtree``): a folder in use by a running
    report is refused; the lock of a killed one is taken over, and released after the run."""
    import subprocess
    from dataclasses import replace

    cfg, nets = setup
    out = tmp_path / "rep"
    lock = tmp_path / "rep.lock"
    lock.write_text(f"{os.getppid()}\n")  # a process that runs
    with pytest.raises(ValueError, match=rf"report folder .*rep is in use by process {os.getppid()}"):
        build_report(replace(cfg, out=out), ("jacobian",), nets=nets)
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(f"{gone.pid}\n")  # a report killed with SIGKILL
    with pytest.raises(AssertionError, match="started its work"):
        build_report(replace(cfg, out=out), ("jacobian",), nets=nets)
    assert not lock.exists()
