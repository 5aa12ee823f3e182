"""The command runs as ``python -m linstab.cli`` and ``python -m linstab.cli.main`` too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from linstab import __version__


@pytest.mark.parametrize("module", ["linstab.cli", "linstab.cli.main"])
def test_module_entry_points_run_the_command(module):
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"linstab {__version__}"
    done = subprocess.run([sys.executable, "-m", module, "spectrum"], capture_output=True, text=True)
    assert done.returncode == 2 and "required" in done.stderr


def test_output_paths_and_exclusive_options_are_refused_before_any_work(tmp_path, capsys):
    """Output files that are folders or lie under a file, output folders that are files, and
    contradictory options stop the command at parsing (exit 2), before a model is loaded."""
    import linstab.cli as cli

    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    ckpt = ["train", "--depth", "8", "--epochs", "1", "--data", str(tmp_path)]
    cases = [
        (["spectrum", "--unit", "1.1", "--out", str(afile / "a.npz")], "is a file, not a folder"),
        (["spectrum", "--unit", "1.1", "--out", str(tmp_path)], "is a folder"),
        (["report", "--quick", "--out", str(afile)], "is a file, not a folder"),
        (["report", "--quick", "--out", str(afile / "sub")], "is a file, not a folder"),
        (["report", "--quick", "--profile", str(tmp_path)], "is a folder"),
        ([*ckpt, "--out", str(tmp_path / "m.safetensors"), "--checkpoint", str(tmp_path)], "is a folder"),
        ([*ckpt, "--out", str(afile / "m.safetensors")], "is a file, not a folder"),
        (["sweep", "--out", str(afile)], "is a file, not a folder"),
        (["report", "--quick", "--cache-dir", str(afile)], "is a file, not a folder"),
        (["sweep", "summary", str(tmp_path), "--json", str(afile / "s.json")], "is a file, not a folder"),
        (["sweep", "summary", str(tmp_path), "--json", str(tmp_path)], "is a folder"),
        (["report", "--shortcut-reference", "resnet56-akamaster", "--no-shortcut-reference"], "not allowed"),
    ]
    for argv, why in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2, argv
        assert why in capsys.readouterr().err, argv


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc: a folder no one can write in")
def test_output_folders_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    """An output under a folder where no file can be created (read-only mount, foreign folder;
    here /proc, which refuses even root) was found only when the result was saved, after the
    whole computation (an exact spectrum: 3 minutes lost). The folder is tried at parsing; the
    test file is removed again."""
    import linstab.cli as cli

    for argv in (
        ["spectrum", "--unit", "1.1", "--out", "/proc/linstab-test.npz"],
        ["propagate", "--attacks", "fgsm", "--out", "/proc/linstab-test/p.csv"],
        ["report", "--quick", "--out", "/proc/linstab-test"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2, argv
        assert "cannot write in the folder /proc" in capsys.readouterr().err, argv
    from linstab.cli.common import out_dir, out_file

    assert out_file(str(tmp_path / "new" / "a.npz")) and out_dir(str(tmp_path / "r"))
    assert list(tmp_path.iterdir()) == []  # no test file left, nothing created


@pytest.mark.parametrize(
    "argv",
    [
        ["propagate", "--attacks", "fgsm", "--out", "x"],  # a prefix of --attacks-json
        ["report", "--quic"],
        ["figure", "scree", "--unit", "1", "--out", "x"],  # a prefix of --unit-index
        ["sweep", "summary", "--ou", "x"],
    ],
    ids=["propagate", "report", "figure", "sweep-summary"],
)
def test_abbreviated_options_are_refused(argv, capsys):
    """Options count only as spelled in full, in every subcommand: an abbreviation could name
    another option than the one meant (``--attacks`` for ``--attacks-json``)."""
    import linstab.cli as cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_sigterm_ends_a_report_through_its_cleanup(tmp_path, monkeypatch):
    """``kill PID`` of a running ``linstab report`` left its hidden staging folder behind (removed
    only by a later run): SIGTERM now ends the command with status 143 through its cleanup, and
    the handler it replaced is back afterwards."""
    import os
    import signal
    import time

    import numpy as np
    import torch
    from factories import tiny_image

    import linstab.report.build as build
    from linstab.cli.main import main

    (tmp_path / "sigterm_models.py").write_text(
        "from factories import make_net\n\ndef build():\n    return make_net('option-B', seed=3)\n"
    )
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "imgs.npy", torch.stack([tiny_image(0)]).numpy())

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the signal arrives here
        raise AssertionError("SIGTERM did not end the command")

    monkeypatch.setattr(build, "section_jacobian_tests", killed)
    before = signal.getsignal(signal.SIGTERM)
    args = ["report", "--model", "sigterm_models:build", "--images", "imgs.npy", "--sections", "jacobian"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", "rep", "--no-cache", "--no-progress", "--no-shortcut-reference"])
    assert exc.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "imgs.npy",
        "sigterm_models.py",
    ]  # neither a report nor a staging folder
    assert signal.getsignal(signal.SIGTERM) is before
    sys.modules.pop("sigterm_models", None)


def test_ctrl_c_in_any_command_is_one_line_and_status_130(monkeypatch, capsys):
    """KeyboardInterrupt came out of every command but report and sweep as a traceback."""
    import linstab.cli.common as cli_common
    from linstab.cli.main import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_common, "network_from_args", interrupted)
    try:
        rc = main(["predict", "--model", "resnet20-linstab", "--images", "0"])
    except KeyboardInterrupt:
        pytest.fail("the interrupt came out of the command (a traceback)")
    assert rc == 130
    assert capsys.readouterr().err.strip() == "linstab predict: interrupted"


def test_an_empty_attacks_value_is_refused_not_taken_as_the_default(tmp_path, capsys):
    from linstab.cli.main import main

    assert main(["report", "--quick", "--attacks", "", "--out", str(tmp_path / "r")]) == 2
    assert "unknown attacks ['']" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
