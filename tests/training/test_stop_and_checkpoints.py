"""Tests of ``linstab train``'s edges: stop signals outside training steps, checkpoint reading,
recipe checks before any work, argument types, and ``export_checkpoint`` (``linstab snapshot``).

The runs are ResNet-8 on 96 JPEG images in batches of 32 (3 steps per epoch, about a second);
they need the JPEG CIFAR-10 zips (``$LINSTAB_CIFAR10_JPEG``) and are skipped without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from linstab import models, training
from linstab.cli import main as cli_main
from linstab.training import loop

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / os.environ.get("LINSTAB_CIFAR10_JPEG", "../shared/data/cifar10-jpeg")
HAVE_DATA = (DATA / "train.zip").is_file() and (DATA / "test.zip").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"JPEG CIFAR-10 zips not found in {DATA}")
main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread"
)
COMMON = {"batch_size": 32, "seed": 1, "limit": 96, "progress": False}  # 3 steps per epoch


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run: (its model file, its summary)."""
    if not HAVE_DATA:
        pytest.skip(f"JPEG CIFAR-10 zips not found in {DATA}")
    out = tmp_path_factory.mktemp("ref") / "full.safetensors"
    return out, training.train(8, "B", DATA, 2, out, **COMMON)


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = (models.load_state_dict_file(p, "safetensors") for p in (a, b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _signal_on_call(monkeypatch, name: str, call: int, sig=signal.SIGTERM) -> dict:
    """Make ``loop.<name>`` send ``sig`` to this process on its ``call``-th call."""
    real, calls = getattr(loop, name), {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, name, wrapped)
    return calls


# --------------------------------------------------------------------------------------------
# Stop signals in a training step and from the command line
# --------------------------------------------------------------------------------------------
@needs_data
@main_thread_only
@pytest.mark.parametrize("signalled_at", [2, 3, 5])
def test_sigterm_saves_where_the_run_is_and_resume_loses_nothing(tmp_path, monkeypatch, signalled_at):
    """SIGTERM during a training step (no timed mid-epoch saves): the step ends, the checkpoint
    is saved there (within an epoch, or after the epoch when it was the epoch's last step), the
    run returns with the signal's exit status and the previous handler back, and a resumed run
    ends bit for bit as an uninterrupted one."""
    common = {**COMMON, "seed": 3}
    full = training.train(8, "B", DATA, 2, tmp_path / "full.safetensors", **common)
    calls = _signal_on_call(monkeypatch, "augment", signalled_at)
    handler = signal.getsignal(signal.SIGTERM)
    out, lines = tmp_path / "part.safetensors", []
    part = training.train(8, "B", DATA, 2, out, checkpoint_seconds=None, log=lines.append, **common)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == handler
    assert part["stopped_by"] == "SIGTERM" and part["exit_status"] == 143 and not part["completed"]
    assert calls["n"] == signalled_at and not out.exists()  # no step after the signal's
    ckpt = torch.load(tmp_path / "part.ckpt.pt", map_location="cpu", weights_only=True)
    epoch, step = divmod(signalled_at, 3)
    assert ckpt["epoch"] == epoch and ckpt.get("in_epoch", {}).get("step", 0) == step
    where = f"at step {step}/3 of epoch {epoch + 1}/2" if step else f"after epoch {epoch}/2"
    assert f"SIGTERM: stopped {where}" in lines[-1]

    resumed = training.train(8, "B", DATA, 2, out, resume=True, **common)
    assert resumed["completed"] and resumed["stopped_by"] is None
    a = models.load_state_dict_file(tmp_path / "full.safetensors", "safetensors")
    b = models.load_state_dict_file(out, "safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for key in ("train_loss", "train_acc", "test_acc"):
        assert [h[key] for h in full["history"]] == [h[key] for h in resumed["history"]], key


@needs_data
def test_kill_of_the_command_saves_and_exits_with_the_signal_status(tmp_path):
    """``kill PID`` of a running ``linstab train``: it saves, says where and exits with 143 (the
    resume from such a checkpoint is tested above)."""
    out = tmp_path / "m.safetensors"
    argv = [sys.executable, "-m", "linstab.cli", "train", "--depth", "8", "--epochs", "200", "--limit", "96",
            "--batch-size", "32", "--data", str(DATA), "--out", str(out), "--threads", "1",
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch   1/200"):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)
    assert lines[-1].startswith("SIGTERM: stopped ") and "continue with resume" in lines[-1]
    ckpt = torch.load(tmp_path / "m.ckpt.pt", map_location="cpu", weights_only=True)
    assert 1 <= ckpt["epoch"] < 200 and not out.exists()


# --------------------------------------------------------------------------------------------
# Stop signals outside a training step
# --------------------------------------------------------------------------------------------
@needs_data
@main_thread_only
def test_a_signal_in_the_last_evaluation_stops_before_the_final_files(reference, tmp_path, monkeypatch):
    """SIGTERM in the last epoch's evaluation: the run used to ignore it and go on to the final
    pass (minutes for a weight average); now it saves, stops with 143, and resume finishes."""
    full, _ = reference
    _signal_on_call(monkeypatch, "_eval_pass", 2)
    out, lines = tmp_path / "m.safetensors", []
    part = training.train(8, "B", DATA, 2, out, log=lines.append, **COMMON)
    monkeypatch.undo()
    assert part["stopped_by"] == "SIGTERM" and part["exit_status"] == 143
    assert not part["completed"] and part["epoch"] == 2 and not out.exists()
    assert "stopped after epoch 2/2, before the final evaluation" in lines[-1]
    resumed = training.train(8, "B", DATA, 2, out, resume=True, **COMMON)
    assert resumed["completed"] and resumed["stopped_by"] is None
    _same_weights(full, out)


@needs_data
@main_thread_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_data_loads_stops_before_the_first_step(tmp_path, monkeypatch, sig):
    """A signal during data loading was not handled (SIGINT: a KeyboardInterrupt traceback); now
    it stops the run before its first step, writes nothing and returns the signal's status."""
    calls = _signal_on_call(monkeypatch, "load_split", 1, sig)
    steps = _signal_on_call(monkeypatch, "augment", 10**9)
    out, lines = tmp_path / "m.safetensors", []
    part = training.train(8, "B", DATA, 2, out, log=lines.append, **COMMON)
    assert calls["n"] == 2 and steps["n"] == 0  # both splits loaded, no training step
    assert part["stopped_by"] == sig.name and part["exit_status"] == 128 + int(sig)
    assert f"{sig.name}: stopped before its first training step, nothing to save" in lines[-1]
    assert not (tmp_path / "m.ckpt.pt").exists() and not out.exists()


# --------------------------------------------------------------------------------------------
# Checkpoints: read errors, recipe checks before any work
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"garbage\n", "not a readable linstab training checkpoint"),
        ("truncated", "not a readable linstab training checkpoint"),
        (torch.zeros(2), "got a Tensor"),
        ({"version": 7}, "of version 1: .* got version 7"),
        ({"version": 1, "model": {}}, "this one lacks \\['recipe', 'epoch'"),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_a_clear_error(tmp_path, content, match):
    ckpt = tmp_path / "m.ckpt.pt"
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    elif content == "truncated":
        torch.save({"version": 1, "model": {"w": torch.zeros(1000)}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    else:
        torch.save(content, ckpt)
    with pytest.raises(ValueError, match=match):
        training.export_checkpoint(ckpt, tmp_path / "snap.safetensors")
    assert not (tmp_path / "snap.safetensors").exists()
    if HAVE_DATA:  # the same reader serves --resume, before the data are loaded
        with pytest.raises(ValueError, match=match):
            training.train(8, "B", DATA, 2, tmp_path / "m.safetensors", resume=True, **COMMON)


@needs_data
def test_resume_refuses_another_recipe_before_loading_data(tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.safetensors"
    training.train(8, "B", DATA, 2, out, stop_after=1, **COMMON)
    ckpt = (tmp_path / "m.ckpt.pt").read_bytes()

    def no_loading(*_args, **_kwargs):
        raise AssertionError("the data were loaded before the recipe was checked")

    monkeypatch.setattr(loop, "load_split", no_loading)
    with pytest.raises(ValueError, match="max_lr: checkpoint 0.2, requested 0.1"):
        training.train(8, "B", DATA, 2, out, resume=True, **{**COMMON, "lr": 0.1})
    with pytest.raises(ValueError, match="depth: checkpoint 8, requested 14"):
        training.train(14, "B", DATA, 2, out, resume=True, **COMMON)
    argv = ["train", "--depth", "8", "--epochs", "2", "--limit", "96", "--batch-size", "32", "--seed", "1",
            "--data", str(DATA), "--out", str(out), "--resume", "--lr", "0.1", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "recipe differs" in err and "Traceback" not in err
    assert (tmp_path / "m.ckpt.pt").read_bytes() == ckpt


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"limit": 9.5}, TypeError, "limit .* got float 9.5"),
        ({"limit": "96"}, TypeError, "limit .* got str '96'"),
        ({"stop_after": True}, TypeError, "stop_after .* got bool"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
        ({"lr": "0.1"}, TypeError, "lr must be a number; got str"),
        ({"label_smoothing": None}, TypeError, "label_smoothing must be a number"),
        ({"weight_decay": float("nan")}, ValueError, "weight_decay"),
        ({"stop_after": 0}, ValueError, "stop_after"),
    ],
)
def test_arguments_of_the_wrong_type_are_refused_before_any_work(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        training.train(8, "B", tmp_path, 1, tmp_path / "m.safetensors", progress=False, **kwargs)
    assert not list(tmp_path.iterdir())


def test_a_finished_model_is_never_replaced_by_a_new_run(tmp_path):
    """With no checkpoint of its own, a run replaced a finished model at ``out`` (and ``--init M
    --out M`` its own start): refused before any work; only a resume of the run that wrote the
    files (its checkpoint) rewrites them."""
    out = tmp_path / "m.safetensors"
    for existing in (out, out.with_suffix(".json")):
        existing.write_text("finished")
        for resume in (False, True):
            with pytest.raises(ValueError, match=r"m\.(safetensors|json) exists .* give another --out"):
                training.train(8, "B", tmp_path, 1, out, resume=resume, init=out, progress=False)
        assert existing.read_text() == "finished"
        existing.unlink()
    with pytest.raises(ValueError, match="init and out are the same file"):
        out.write_text("x")
        (tmp_path / "m.ckpt.pt").write_text("x")  # a checkpoint lets the exists-check pass
        training.train(8, "B", tmp_path, 1, out, resume=True, init=out, progress=False)


def test_the_checkpoint_cannot_be_the_output(tmp_path):
    for ckpt in ("m.safetensors", "m.json"):
        with pytest.raises(ValueError, match="checkpoint must be another file than out"):
            training.train(8, "B", tmp_path, 1, tmp_path / "m.safetensors", checkpoint=tmp_path / ckpt)


@needs_data
def test_numpy_integers_and_a_home_relative_out_are_taken(tmp_path, monkeypatch):
    """NumPy integers used to fail after the data loaded (OneCycleLR) or at the JSON sidecar, and
    ``~`` in ``out`` made a folder named ``~``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = {**COMMON, "limit": np.int64(96), "batch_size": np.int64(32)}
    summary = training.train(np.int64(8), "B", DATA, np.int64(1), "~/runs/m.safetensors", **args)
    assert summary["completed"] and (tmp_path / "runs" / "m.safetensors").is_file()
    side = json.loads((tmp_path / "runs" / "m.json").read_text())
    assert side["recipe"]["limit"] == 96 and side["recipe"]["depth"] == 8
    assert not Path("~").exists()


# --------------------------------------------------------------------------------------------
# export_checkpoint / linstab snapshot
# --------------------------------------------------------------------------------------------
@needs_data
def test_snapshot_never_overwrites_a_finished_model_and_is_reproducible(reference, tmp_path, capsys):
    full, _ = reference
    ckpt = full.with_name("full.ckpt.pt")
    before = full.read_bytes()
    assert cli_main(["snapshot", str(ckpt), "--out", str(full)]) == 2
    assert "is not an earlier snapshot" in capsys.readouterr().err
    assert full.read_bytes() == before
    # an earlier snapshot is replaced; the same weights give the same file (metadata order fixed)
    snap = tmp_path / "snap.safetensors"
    shas = []
    for _ in range(2):
        side = training.export_checkpoint(ckpt, snap)
        shas.append(hashlib.sha256(snap.read_bytes()).hexdigest())
        assert side["registry"]["sha256"] == shas[-1] and side["completed"] is False
    assert shas[0] == shas[1]
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not an earlier snapshot"):
        training.export_checkpoint(ckpt, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="is a folder"):
        training.export_checkpoint(tmp_path, tmp_path / "x.safetensors")
    # the reference run finished: its checkpoint's snapshot says all epochs ran, not "unfinished"
    assert "all epochs done, before the run's final evaluation" in side["note"]


@needs_data
def test_a_limit_above_the_training_images_is_refused(tmp_path):
    """``--limit 100000`` used to train on the 50,000 images and record 100000 in the recipe."""
    with pytest.raises(ValueError, match="limit 60000 exceeds the 50000 training images"):
        training.train(8, "B", DATA, 1, tmp_path / "m.safetensors", limit=60000, progress=False)
    assert not (tmp_path / "m.ckpt.pt").exists()


@needs_data
def test_temporary_files_of_a_killed_save_are_removed_and_a_running_ones_kept(tmp_path):
    """A process killed while saving leaves ``.NAME.PID.NS.tmp``; the next run removes it, not
    the temporary file of a process that still runs."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    out = tmp_path / "m.safetensors"
    stale = tmp_path / f".m.ckpt.pt.{gone.pid}.123.tmp"
    live = tmp_path / f".m.ckpt.pt.{os.getppid()}.123.tmp"
    for f in (stale, live):
        f.write_bytes(b"partial")
    training.train(8, "B", DATA, 1, out, stop_after=1, **COMMON)
    assert not stale.exists() and live.exists()


@needs_data
def test_a_second_run_on_a_checkpoint_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path):
    """A resumed run started while the stopping one still ran read its mid-epoch checkpoint, and
    both then wrote the same file. The checkpoint is locked (``<ckpt>.lock`` with the pid) while
    a run uses it: a second run is refused before it reads anything; a lock whose process is gone
    (SIGKILL) is taken over; the lock is gone after the run."""
    common = {"batch_size": 32, "seed": 3, "limit": 64, "progress": False}
    out = tmp_path / "m.safetensors"
    lock = tmp_path / "m.ckpt.pt.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{other.pid}\n")
        with pytest.raises(ValueError, match=rf"checkpoint .*m\.ckpt\.pt is in use by process {other.pid}"):
            training.train(8, "B", DATA, 1, out, **common)
        assert lock.read_text() == f"{other.pid}\n" and not out.exists()
    finally:
        other.kill()
        other.wait()
    summary = training.train(8, "B", DATA, 1, out, **common)  # its process is gone: taken over
    assert summary["completed"] and out.is_file() and not lock.exists()
