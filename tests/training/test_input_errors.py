"""Bad input to ``linstab.training`` found before any heavy work, and run set-ups that once crashed.

These tests run on a tiny fake JPEG CIFAR-10 folder (20 training and 10 test images) written
here, so they need no shared data.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from linstab import training
from linstab.cli import main as cli_main
from linstab.data.images import CIFAR10_CLASSES
from linstab.models import CifarResNet
from linstab.training import loop
from linstab.training.optim import make_scheduler

N_TRAIN = 20


def _write_zip(path: Path, split: str, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for cls in CIFAR10_CLASSES:
            for i in range(per_class):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
                zf.writestr(f"{split}/{cls}/{i}.jpg", buf.getvalue())


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    """A JPEG CIFAR-10 folder of 2 training and 1 test image per class."""
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    _write_zip(root / "train.zip", "train", N_TRAIN // 10, 0)
    _write_zip(root / "test.zip", "test", 1, 1)
    return root


@pytest.fixture(scope="module")
def four_step_run(fake_data, tmp_path_factory):
    """One epoch of ResNet-8 in 4 steps of 5 images: a warm-up of exactly one step (0.25 * 4)."""
    out = tmp_path_factory.mktemp("run") / "r8.safetensors"
    summary = training.train(8, "B", fake_data, 1, out, batch_size=5, progress=False)
    return out, summary


@pytest.mark.parametrize(("total", "warmup"), [(4, 0.25), (10, 0.1), (2, 0.5)])
def test_a_one_step_warm_up_schedule_runs(total, warmup):
    """OneCycleLR divides by zero for a warm-up of exactly one step; the schedule starts at the
    peak instead and anneals to the final learning rate."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt, 0.2, total, warmup)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(total - 1):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.2) and lrs[-1] == pytest.approx(2e-5)
    assert lrs == sorted(lrs, reverse=True)


def test_a_four_step_run_completes(four_step_run):
    out, summary = four_step_run
    assert summary["completed"] and out.is_file()


def test_the_history_records_the_learning_rate_of_the_epochs_last_step(four_step_run):
    """Not the next step's (past the end of the cycle for the last epoch: 0.05 here)."""
    meta = json.loads(four_step_run[0].with_suffix(".json").read_text())
    assert meta["history"][-1]["lr"] == pytest.approx(meta["recipe"]["final_lr"])


def test_a_limit_above_the_training_set_is_refused_before_decoding(fake_data, tmp_path, monkeypatch, capsys):
    def no_decoding(*args, **kwargs):
        pytest.fail("the images were decoded before the limit was checked")

    monkeypatch.setattr(loop, "load_split", no_decoding)
    with pytest.raises(ValueError, match=rf"limit {N_TRAIN + 1} exceeds the {N_TRAIN} training images"):
        training.train(8, "B", fake_data, 1, tmp_path / "m.safetensors", limit=N_TRAIN + 1, progress=False)
    argv = ["train", "--depth", "8", "--epochs", "1", "--data", str(fake_data), "--limit", "50000",
            "--out", str(tmp_path / "m.safetensors"), "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 2
    assert f"exceeds the {N_TRAIN} training images" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("sidecar", ["{bad json", "[1, 2]", '{"total_epochs": "many"}', "\udcff"])
def test_an_init_with_a_damaged_sidecar_is_named(fake_data, tmp_path, sidecar):
    from safetensors.torch import save_file

    init = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in CifarResNet(8, "B").state_dict().items()}, str(init))
    init.with_suffix(".json").write_bytes(sidecar.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match=r"init .*start\.safetensors: its sidecar start\.json is damaged"):
        training.train(8, "B", fake_data, 1, tmp_path / "m.safetensors", init=init, progress=False)


@pytest.mark.parametrize(("name", "error"), [("", ValueError), ("  ", ValueError), (5, TypeError)])
def test_a_blank_model_name_is_refused(fake_data, tmp_path, name, error):
    """A blank name would give a sidecar that ``load_model`` refuses, after the whole run."""
    with pytest.raises(error, match="name must be"):
        training.train(8, "B", fake_data, 1, tmp_path / "m.safetensors", name=name, progress=False)
    with pytest.raises(error, match="name must be"):
        training.export_checkpoint(tmp_path / "m.ckpt.pt", tmp_path / "s.safetensors", name=name)
    assert not list(tmp_path.iterdir())


def test_cli_refuses_a_blank_name(fake_data, tmp_path, capsys):
    argv = ["train", "--depth", "8", "--epochs", "1", "--data", str(fake_data), "--name", " ",
            "--out", str(tmp_path / "m.safetensors"), "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "name must be a non-blank string" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s["model"].pop("output.bias"),
        lambda s: s.update(rng={}),
        lambda s: s.update(optimizer=[]),
        lambda s: s.update(in_epoch={"step": 1}),
    ],
    ids=["model-key", "rng", "optimizer", "in-epoch"],
)
def test_a_checkpoint_with_damaged_state_is_refused(four_step_run, fake_data, tmp_path, damage, capsys):
    """A checkpoint of the same recipe whose saved state is damaged: a ValueError naming it."""
    out, summary = four_step_run
    state = torch.load(summary["checkpoint"], weights_only=True)
    damage(state)
    ckpt = tmp_path / "damaged.ckpt.pt"
    torch.save(state, ckpt)
    with pytest.raises(
        ValueError, match=r"cannot resume from .*damaged\.ckpt\.pt: its saved state does not fit"
    ):
        training.train(
            8, "B", fake_data, 1, tmp_path / "m.safetensors", batch_size=5, resume=True,
            checkpoint=ckpt, progress=False,
        )  # fmt: skip
    argv = ["train", "--depth", "8", "--epochs", "1", "--data", str(fake_data), "--batch-size", "5",
            "--resume", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.safetensors"),
            "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "its saved state does not fit" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()
