"""Tests of linstab.training: data cache, augmentation, a short training run, resume, outputs.

The training tests need the JPEG CIFAR-10 zips (``$LINSTAB_CIFAR10_JPEG``, default
``../shared/data/cifar10-jpeg`` relative to the repository root) and are skipped without them.
They run on a few hundred images with one CPU thread and take a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

import linstab
from linstab import models, training
from linstab.cli import main as cli_main
from linstab.cli import train as cli_train
from linstab.data import default_images
from linstab.training import precision

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / os.environ.get("LINSTAB_CIFAR10_JPEG", "../shared/data/cifar10-jpeg")
HAVE_DATA = (DATA / "train.zip").is_file() and (DATA / "test.zip").is_file()
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"JPEG CIFAR-10 zips not found in {DATA} (set LINSTAB_CIFAR10_JPEG)"
)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One epoch of ResNet-8 on 512 JPEG training images (batch 32, 16 steps)."""
    if not HAVE_DATA:
        pytest.skip(f"JPEG CIFAR-10 zips not found in {DATA}")
    out = tmp_path_factory.mktemp("run") / "r8-test.safetensors"
    summary = training.train(8, "B", DATA, 1, out, batch_size=32, lr=0.2, seed=0, limit=512, progress=False)
    return out, summary


def _build(spec: models.CheckpointSpec, weights: Path | None = None) -> torch.nn.Module:
    """``models.build_from_spec`` returns ``(model, path)`` (older versions: the model)."""
    built = models.build_from_spec(spec, weights)
    return built[0] if isinstance(built, tuple) else built


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------
def _reference_augment(images: torch.Tensor, seed: int, pad: int = 4) -> torch.Tensor:
    """Per-image loop drawing the same random numbers as training.augment."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    mirror = torch.rand(n, generator=g) < 0.5
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    out = []
    for i in range(n):
        crop = padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        out.append(crop.flip(-1) if mirror[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_shape_dtype_and_determinism(dtype):
    g = torch.Generator().manual_seed(123)
    x = torch.randint(1, 256, (16, 3, 32, 32), generator=g).to(dtype)
    a = training.augment(x, torch.Generator().manual_seed(7))
    b = training.augment(x, torch.Generator().manual_seed(7))
    c = training.augment(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a, _reference_augment(x, 7))
    # zero padding: the inputs have no zeros, so zeros can only come from the padding
    assert (a == 0).any()


def test_augment_flip_only_and_validation():
    x = torch.rand(32, 3, 8, 8)
    y = training.augment(x, torch.Generator().manual_seed(0), pad=0)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 32
    assert torch.equal(training.augment(x, None, pad=0, flip=False), x)
    with pytest.raises(ValueError, match="N, C, H, W"):
        training.augment(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="pad"):
        training.augment(x, pad=-1)


def test_normalize_uint8_and_float_agree():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = models.CIFAR10_MEAN_PYTORCHCV, models.CIFAR10_STD_PYTORCHCV
    a = training.normalize(x, mean, std)
    b = training.normalize(x.float() / 255.0, mean, std)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b)


def test_param_groups_no_decay_on_bn_and_bias():
    model = models.CifarResNet(8, "B")
    decay, no_decay = training.param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    n_params = len(list(model.parameters()))
    assert len(decay["params"]) + len(no_decay["params"]) == n_params


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 21}, "depth"),
        ({"depth": 2}, "depth"),
        ({"shortcut": "C"}, "shortcut"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -0.1}, "lr"),
        ({"limit": 0}, "limit"),
        ({"out": "model.pt"}, "safetensors"),
        ({"data_dir": "/nonexistent/cifar10-jpeg"}, "does not exist"),
    ],
)
def test_train_rejects_bad_arguments(tmp_path, kwargs, match):
    args = {
        "depth": 8,
        "shortcut": "B",
        "data_dir": DATA if HAVE_DATA else tmp_path,
        "epochs": 1,
        "out": tmp_path / "m.safetensors",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        training.train(**args, progress=False)


def test_train_rejects_folder_without_zips(tmp_path):
    with pytest.raises(ValueError, match="train.zip"):
        training.train(8, "B", tmp_path, 1, tmp_path / "m.safetensors", progress=False)


def test_existing_checkpoint_needs_resume(tmp_path, capsys):
    # rerunning a killed run's command without --resume must not start over and overwrite
    # the checkpoint after one epoch
    ckpt = tmp_path / "m.ckpt.pt"
    ckpt.write_bytes(b"earlier run")
    with pytest.raises(ValueError, match="--resume"):
        training.train(8, "B", tmp_path, 1, tmp_path / "m.safetensors", progress=False)
    argv = ["train", "--depth", "8", "--epochs", "1", "--out", str(tmp_path / "m.safetensors"),
            "--data", str(tmp_path)]  # fmt: skip
    assert cli_main(argv) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert ckpt.read_bytes() == b"earlier run"


def test_cli_parser_registers_train():
    parser = argparse.ArgumentParser(prog="linstab")
    sub = parser.add_subparsers(dest="command")
    cli_train.add_parser(sub)
    args = parser.parse_args(
        ["train", "--depth", "20", "--shortcut", "A", "--data", "d", "--epochs", "3",
         "--out", "x.safetensors", "--batch-size", "64", "--lr", "0.3", "--seed", "5",
         "--limit", "100", "--resume", "--device", "cpu"]
    )  # fmt: skip
    assert args.func is cli_train.run_cli
    assert (args.depth, args.shortcut, args.epochs, args.batch_size) == (20, "A", 3, 64)
    assert (args.lr, args.seed, args.limit, args.resume, args.device) == (0.3, 5, 100, True, "cpu")
    assert cli_main(["train", "--depth", "21", "--epochs", "1", "--out", "x.safetensors", "--data", "/"]) == 2
    assert args.schedule == "one-cycle" and args.warmup is None


def test_cli_swa_refuses_warmup_and_a_missing_init(tmp_path, capsys):
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "x.safetensors"), "--data", str(tmp_path)]
    assert cli_main([*argv, "--schedule", "swa"]) == 2
    assert "--init" in capsys.readouterr().err
    assert cli_main([*argv, "--schedule", "swa", "--init", "m.safetensors", "--warmup", "0.1"]) == 2
    assert "--warmup belongs to the one-cycle schedule" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Data cache
# --------------------------------------------------------------------------------------------
@needs_data
def test_load_split_caches_decoded_arrays():
    x1, y1 = training.load_split("test", DATA, limit=40)
    cached = sorted(p.name for p in training.data_cache_dir().glob("test-40-*.npy"))
    assert len(cached) == 2, cached
    x2, y2 = training.load_split("test", DATA, limit=40)
    assert x1.dtype == torch.uint8 and x1.shape == (40, 3, 32, 32) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(torch.bincount(y1, minlength=10), torch.full((10,), 4))
    x3, _ = training.load_split("test", DATA, limit=40, cache=False)
    assert torch.equal(x1, x3)


# --------------------------------------------------------------------------------------------
# Training, outputs and resume
# --------------------------------------------------------------------------------------------
@needs_data
def test_one_epoch_decreases_the_loss(short_run):
    _, summary = short_run
    assert summary["completed"] and summary["epoch"] == 1
    rec = summary["history"][0]
    assert rec["loss_last_quarter"] < rec["loss_first_quarter"] - 0.05, rec
    assert 0.0 <= rec["test_acc"] <= 1.0 and rec["seconds"] > 0
    assert rec["cpu_seconds"] > 0 and rec["threads"] == torch.get_num_threads()


@needs_data
def test_outputs_round_trip_and_sidecar(short_run):
    out, summary = short_run
    sidecar_path = out.with_suffix(".json")
    assert out.is_file() and sidecar_path.is_file()
    meta = json.loads(sidecar_path.read_text())
    assert meta == summary["sidecar"]
    reg = meta["registry"]
    assert reg["sha256"] == models.sha256_file(out)
    assert reg["name"] == "r8-test" and reg["file_name"] == out.name
    assert (reg["depth"], reg["shortcut"]) == (8, "B")
    assert reg["mean"] == list(models.CIFAR10_MEAN_PYTORCHCV)
    assert reg["std"] == list(models.CIFAR10_STD_PYTORCHCV)
    assert reg["test_error_jpeg"] == pytest.approx(100 * (1 - meta["test_accuracy_jpeg"]), abs=0.01)
    assert meta["training_cpu_time_s"] == pytest.approx(
        sum(r["cpu_seconds"] for r in meta["history"]), abs=0.1
    )
    assert meta["training_cpu_time_epochs"] == len(meta["history"]) == 1
    for key in ("recipe", "epochs", "seed", "dataset", "training_wall_time_s", "device",
                "torch_version", "default_images_accuracy", "precision", "machine"):  # fmt: skip
        assert key in meta, key
    expected = training.resolve_precision("auto", torch.device("cpu"))
    assert (
        meta["precision"]
        == meta["recipe"]["precision"]
        == ("bf16 autocast" if expected == "bf16" else "float32")
    )
    assert "JPEG" in meta["dataset"]

    sd = models.load_state_dict_file(out, "safetensors")
    assert all(v.dtype in (torch.float32, torch.int64) for v in sd.values())
    model = models.CifarResNet(8, "B")
    model.load_state_dict(sd, strict=True)
    spec = models.CheckpointSpec(
        name=reg["name"], depth=reg["depth"], shortcut=reg["shortcut"],
        file_name=reg["file_name"], sha256=reg["sha256"], url=None,
        published_error=reg["test_error_jpeg"], source="linstab", fmt="safetensors",
        mean=tuple(reg["mean"]), std=tuple(reg["std"]),
    )  # fmt: skip
    built = _build(spec, out)
    x, y = training.load_split("test", DATA, limit=512)
    acc = training.evaluate(built, x, y, spec.mean, spec.std)
    assert acc == pytest.approx(meta["test_accuracy_jpeg"], abs=1e-6)
    imgs, labels = default_images()
    assert training.evaluate(built, imgs, labels, spec.mean, spec.std) == pytest.approx(
        meta["default_images_accuracy"]
    )


@needs_data
def test_resume_matches_uninterrupted_run(tmp_path):
    common = {"batch_size": 32, "seed": 3, "limit": 96, "progress": False}
    full = training.train(8, "B", DATA, 2, tmp_path / "full.safetensors", **common)
    part = training.train(8, "B", DATA, 2, tmp_path / "part.safetensors", stop_after=1, **common)
    assert not part["completed"] and part["epoch"] == 1
    # folders of the output and the checkpoint that do not exist yet are created up front
    deep = training.train(8, "B", DATA, 2, tmp_path / "a" / "m.safetensors", stop_after=1,
                          checkpoint=tmp_path / "b" / "m.ckpt.pt", **common)  # fmt: skip
    assert deep["epoch"] == 1 and (tmp_path / "b" / "m.ckpt.pt").is_file()
    assert not (tmp_path / "part.safetensors").exists()
    ckpt = torch.load(tmp_path / "part.ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    for key in ("model", "optimizer", "scheduler", "rng", "recipe"):
        assert key in ckpt, key

    with pytest.raises(ValueError, match="recipe differs"):
        training.train(
            8, "B", DATA, 2, tmp_path / "part.safetensors", resume=True,
            **{**common, "seed": 4},
        )  # fmt: skip
    resumed = training.train(8, "B", DATA, 2, tmp_path / "part.safetensors", resume=True, **common)
    assert resumed["completed"] and resumed["epoch"] == 2
    a = models.load_state_dict_file(tmp_path / "full.safetensors", "safetensors")
    b = models.load_state_dict_file(tmp_path / "part.safetensors", "safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in full["history"]] == [h["train_loss"] for h in resumed["history"]]


@needs_data
@pytest.mark.parametrize("killed_at", [2, 5])  # the augment call that dies: epoch 1 step 2, epoch 2 step 2
def test_mid_epoch_checkpoint_resumes_bit_for_bit(tmp_path, monkeypatch, capsys, killed_at):
    """A run killed within an epoch resumes from its mid-epoch checkpoint (``checkpoint_seconds=0``:
    after every step) at the saved step, and ends with the weights and history of an
    uninterrupted run; a snapshot of such a checkpoint says where in the epoch it is."""
    from linstab.training import loop

    common = {"batch_size": 32, "seed": 3, "limit": 96, "progress": False}  # 3 steps per epoch
    full = training.train(8, "B", DATA, 2, tmp_path / "full.safetensors", **common)
    calls = {"n": 0}
    real_augment = loop.augment

    def dying_augment(x, gen):
        calls["n"] += 1
        if calls["n"] == killed_at:
            raise KeyboardInterrupt("killed")
        return real_augment(x, gen)

    monkeypatch.setattr(loop, "augment", dying_augment)
    out = tmp_path / "part.safetensors"
    with pytest.raises(KeyboardInterrupt):
        training.train(8, "B", DATA, 2, out, checkpoint_seconds=0, **common)
    monkeypatch.setattr(loop, "augment", real_augment)
    ckpt = torch.load(tmp_path / "part.ckpt.pt", map_location="cpu", weights_only=True)
    done_steps = killed_at - 1
    assert ckpt["epoch"] == done_steps // 3 and len(ckpt["history"]) == done_steps // 3
    assert ckpt["in_epoch"]["step"] == done_steps % 3 and ckpt["in_epoch"]["steps"] == 3

    snap = training.export_checkpoint(tmp_path / "part.ckpt.pt", tmp_path / "snap.safetensors")
    assert snap["step_in_epoch"] == done_steps % 3
    assert f"step {done_steps % 3}/3 of epoch {done_steps // 3 + 1}" in snap["note"]

    lines = []
    resumed = training.train(8, "B", DATA, 2, out, resume=True, log=lines.append, **common)
    assert f"step {done_steps % 3}/3 of epoch {done_steps // 3 + 1}" in lines[1]
    assert resumed["completed"]
    a = models.load_state_dict_file(tmp_path / "full.safetensors", "safetensors")
    b = models.load_state_dict_file(out, "safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for key in ("train_loss", "train_acc", "test_acc", "loss_first_quarter", "loss_last_quarter"):
        assert [h[key] for h in full["history"]] == [h[key] for h in resumed["history"]], key
    final = torch.load(tmp_path / "part.ckpt.pt", map_location="cpu", weights_only=True)
    assert "in_epoch" not in final and final["epoch"] == 2


def test_checkpoint_interval_is_checked(tmp_path, capsys):
    for bad in (-1.0, float("nan"), "10", True):
        with pytest.raises(ValueError, match="checkpoint_seconds"):
            training.train(8, "B", tmp_path, 1, tmp_path / "m.safetensors", checkpoint_seconds=bad)
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "m.safetensors"), "--data", str(tmp_path)]
    assert cli_main([*argv, "--checkpoint-minutes", "-1"]) == 2
    assert "--checkpoint-minutes must be" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@needs_data
def test_warm_start_from_saved_model(short_run, tmp_path):
    """``init=`` starts from the saved weights (first-batch loss equal to that model's loss, far
    below a random start's) and records their SHA-256 and epochs in the recipe and sidecar."""
    base, base_summary = short_run
    common = {"batch_size": 32, "seed": 5, "limit": 96, "progress": False, "lr": 1e-6, "precision": "float32"}
    warm = training.train(8, "B", DATA, 1, tmp_path / "warm.safetensors", init=base, **common)
    cold = training.train(8, "B", DATA, 1, tmp_path / "cold.safetensors", **common)
    rec = warm["recipe"]["init"]
    assert rec["sha256"] == models.sha256_file(base) and rec["file"] == base.name
    assert rec["total_epochs"] == 1 and rec["history"] == base_summary["history"]
    assert warm["sidecar"]["total_epochs"] == 2 and cold["sidecar"]["total_epochs"] == 1
    # with lr ~ 0 the weights barely move: the warm run stays at the base model's accuracy
    x, y = training.load_split("test", DATA, limit=512)
    mean, std = models.CIFAR10_MEAN_PYTORCHCV, models.CIFAR10_STD_PYTORCHCV
    m_base = models.CifarResNet(8, "B")
    m_base.load_state_dict(models.load_state_dict_file(base, "safetensors"))
    m_warm = models.CifarResNet(8, "B")
    m_warm.load_state_dict(models.load_state_dict_file(tmp_path / "warm.safetensors", "safetensors"))
    w_base = dict(m_base.named_parameters())
    for k, v in m_warm.named_parameters():
        assert torch.allclose(v, w_base[k], atol=1e-4), k
    assert warm["history"][0]["train_loss"] < cold["history"][0]["train_loss"] - 0.1
    assert training.evaluate(m_warm, x, y, mean, std) == pytest.approx(
        training.evaluate(m_base, x, y, mean, std), abs=0.03
    )
    with pytest.raises(ValueError, match="does not hold CifarResNet"):
        training.train(20, "B", DATA, 1, tmp_path / "bad.safetensors", init=base, **common)
    with pytest.raises(ValueError, match="existing .safetensors"):
        training.train(8, "B", DATA, 1, tmp_path / "bad.safetensors", init=tmp_path / "nope.pt", **common)


@needs_data
def test_swa_run_writes_the_average_of_its_epochs_and_resumes(short_run, tmp_path):
    """``schedule="swa"``: constant lr, the written weights are the mean of the end-of-epoch
    iterates (checkpoints after epochs 1 and 2) with recomputed BN statistics; a run resumed
    after epoch 1 writes the same model as an uninterrupted one."""
    base, _ = short_run
    common = {"batch_size": 32, "seed": 2, "limit": 96, "progress": False, "lr": 0.01, "init": base}
    with pytest.raises(ValueError, match="give that model as init"):
        training.train(8, "B", DATA, 2, tmp_path / "x.safetensors", **{**common, "init": None},
                       schedule="swa")  # fmt: skip
    with pytest.raises(ValueError, match="schedule must be one of"):
        training.train(8, "B", DATA, 2, tmp_path / "x.safetensors", **common, schedule="cosine")
    full = training.train(8, "B", DATA, 2, tmp_path / "full.safetensors", **common, schedule="swa")
    part_out = tmp_path / "part.safetensors"
    msgs: list[str] = []
    part = training.train(8, "B", DATA, 2, part_out, stop_after=1, resume=True, log=msgs.append, **common,
                          schedule="swa")  # fmt: skip
    assert part["epoch"] == 1
    assert f"starting from the init weights {base.name}" in msgs[1]
    ckpt1 = torch.load(tmp_path / "part.ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt1["average"]["count"] == 1
    snap = training.export_checkpoint(tmp_path / "part.ckpt.pt", tmp_path / "snap.safetensors")
    assert "SGD iterate" in snap["note"]
    # the recipe's account of the end step may read otherwise in a checkpoint of older code
    ckpt1["recipe"]["averaging"] = "batch-norm statistics over the plain training images"
    torch.save(ckpt1, tmp_path / "part.ckpt.pt")
    resumed = training.train(8, "B", DATA, 2, part_out, resume=True, **common, schedule="swa")
    ckpt2 = torch.load(tmp_path / "part.ckpt.pt", map_location="cpu", weights_only=True)
    assert [h["lr"] for h in resumed["history"]] == [0.01, 0.01]
    assert [h["averaged"] for h in resumed["history"]] == [1, 2]
    a = models.load_state_dict_file(tmp_path / "full.safetensors", "safetensors")
    b = models.load_state_dict_file(part_out, "safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    net = models.CifarResNet(8, "B")
    for k, _ in net.named_parameters():
        expected = (ckpt1["model"][k].double() + ckpt2["model"][k].double()) / 2
        torch.testing.assert_close(a[k].double(), expected, rtol=0, atol=1e-6)
    # the BN statistics are those of the averaged weights over the training images augmented as
    # in training (the seed's own generator), not over the plain images
    net.load_state_dict(a)
    x, _ = training.load_split("train", DATA, limit=96)
    stats = {k: v.clone() for k, v in net.named_buffers() if "running" in k}
    mean, std = models.CIFAR10_MEAN_PYTORCHCV, models.CIFAR10_STD_PYTORCHCV
    gen = torch.Generator().manual_seed(common["seed"])
    training.recompute_bn_statistics(
        net, x, mean, std, 32, transform=lambda b: training.augment(b, gen), generator=gen
    )
    for k, v in net.named_buffers():
        if "running" in k:
            torch.testing.assert_close(v, stats[k], rtol=1e-4, atol=1e-5)
            assert not torch.equal(v, ckpt2["model"][k]), k
    training.recompute_bn_statistics(net, x, mean, std, 32)
    first = "features.init_block.bn.running_mean"
    assert not torch.allclose(dict(net.named_buffers())[first], stats[first], rtol=1e-3, atol=1e-4)
    side = json.loads((tmp_path / "full.json").read_text())
    assert side["swa"]["epochs_averaged"] == 2
    assert "shuffled and augmented as in training" in side["swa"]["batch_norm_inputs"]
    assert "shuffled and augmented" in side["recipe"]["averaging"]
    assert side["swa"]["last_iterate_test_accuracy_jpeg"] == full["history"][-1]["test_acc"]
    assert side["recipe"]["schedule"].startswith("constant lr") and side["recipe"]["lr"] == 0.01
    assert "max_lr" not in side["recipe"] and side["total_epochs"] == 3


# --------------------------------------------------------------------------------------------
# Shipped models
# --------------------------------------------------------------------------------------------
def _shipped_specs() -> list[models.CheckpointSpec]:
    try:
        root = resources.files("linstab") / "weights"
        names = [p.name for p in root.iterdir() if p.name.endswith(".safetensors")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    specs = [s for s in models.REGISTRY.values() if s.package_data and s.file_name in names]
    return sorted(specs, key=lambda s: s.name)


SHIP_TARGETS = {56: 10.0, 110: 9.0}
"""Largest JPEG test error (%) a shipped linstab model of that depth may have (issue 11)."""


@pytest.mark.parametrize(
    "spec",
    _shipped_specs()
    or [pytest.param(None, marks=pytest.mark.skip(reason="no model shipped in linstab/weights"))],
    ids=lambda s: getattr(s, "name", "none"),
)
def test_shipped_model_checksum_and_default_images(spec):
    path = models.resolve_weights(spec, download=False)
    assert models.sha256_file(path) == spec.sha256
    if spec.depth in SHIP_TARGETS:
        assert spec.published_error is not None and spec.published_error <= SHIP_TARGETS[spec.depth], spec
    net = models.Normalize(_build(spec), spec.mean, spec.std).eval()
    imgs, labels = default_images()
    with torch.no_grad():
        pred = net(imgs).argmax(1)
    correct = int((pred == labels).sum())
    assert correct >= 19, f"{spec.name}: {correct}/20 default images correct"


@pytest.mark.parametrize(
    "spec",
    _shipped_specs()
    or [pytest.param(None, marks=pytest.mark.skip(reason="no model shipped in linstab/weights"))],
    ids=lambda s: getattr(s, "name", "none"),
)
def test_shipped_model_loads_into_pytorchcv(spec):
    """A linstab-trained option-B state dict loads into pytorchcv's own class, same logits."""
    pcv = pytest.importorskip("pytorchcv.models.resnet_cifar")
    if spec.shortcut != "B":
        pytest.skip("pytorchcv's CIFAR ResNets have option-B shortcuts only")
    sd = models.load_state_dict_file(models.resolve_weights(spec, download=False), "safetensors")
    ref = getattr(pcv, f"resnet{spec.depth}_cifar10")()
    ref.load_state_dict(sd, strict=True)
    ours = _build(spec)
    imgs, _ = default_images()
    x = training.normalize(imgs, spec.mean, spec.std)
    with torch.no_grad():
        a, b = ours.eval()(x), ref.eval()(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), float((a - b).abs().max())


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------
def test_precision_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert training.resolve_precision("float32", cpu) == "float32"
    native = training.cpu_has_native_bf16()
    assert training.resolve_precision("auto", cpu) == ("bf16" if native else "float32")
    assert training.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert training.resolve_precision("auto", cpu) == "float32"
    with pytest.warns(UserWarning, match="emulated"):
        assert training.resolve_precision("bf16", cpu) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert training.resolve_precision("bf16", torch.device("cuda")) == "bf16"
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
        assert training.resolve_precision("bf16", cpu) == "bf16"
        assert training.resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        training.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        training.train(8, "B", DATA, 1, "x.safetensors", precision="half", progress=False)


def test_bf16_and_float32_training_steps_agree():
    """One SGD step of a tiny option-B net: bf16 autocast and float32 give the same loss to
    2e-2 (relative; bf16 keeps 8 mantissa bits) and gradients with cosine similarity > 0.99."""
    torch.manual_seed(0)
    base = models.CifarResNet(8, "B")
    x = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))
    losses, grads = {}, {}
    for prec in ("float32", "bf16"):
        model = models.CifarResNet(8, "B").to(memory_format=torch.channels_last)
        model.load_state_dict(base.state_dict())
        model.train()
        with precision.autocast(torch.device("cpu"), prec):
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        assert out.dtype == (torch.bfloat16 if prec == "bf16" else torch.float32)
        losses[prec] = float(loss.detach())
        grads[prec] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert losses["bf16"] == pytest.approx(losses["float32"], rel=2e-2)
    cos = torch.nn.functional.cosine_similarity(grads["bf16"], grads["float32"], dim=0)
    assert cos > 0.99, float(cos)


@needs_data
def test_forced_float32_run_records_its_precision(tmp_path):
    run = training.train(
        8, "B", DATA, 1, tmp_path / "f32.safetensors", batch_size=32, limit=64,
        progress=False, precision="float32",
    )  # fmt: skip
    assert run["sidecar"]["precision"] == run["recipe"]["precision"] == "float32"


def test_a_trained_model_file_loads_by_path(short_run, tmp_path, capsys):
    """``--model runs/x.safetensors``: a model from ``linstab train`` is analysed from its file
    (architecture and SHA-256 from the sidecar); a changed file or a missing sidecar is refused."""
    import shutil

    from linstab.cli.main import main
    from linstab.sweep.tasks import get_network, registry_model

    out, _ = short_run
    net = linstab.load_model(str(out))
    assert net.name == "r8-test" and net.spec.depth == 8 and net.spec.shortcut == "B"
    assert net.sha256 == json.loads(out.with_suffix(".json").read_text())["registry"]["sha256"]
    x = linstab.default_images([0])[0]
    assert torch.isfinite(net.predict(x)).all()
    assert main(["info", "--model", str(out)]) == 0 and "r8-test" in capsys.readouterr().out
    spec = registry_model(str(out))
    assert spec.registry == str(out.resolve()) and get_network(spec).sha256 == net.sha256
    with pytest.raises(ValueError, match="not both"):
        linstab.load_model(str(out), weights=str(out))
    lone = tmp_path / "lone.safetensors"
    shutil.copy(out, lone)
    with pytest.raises(ValueError, match="sidecar"):
        linstab.load_model(str(lone))
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes(out.read_bytes()[:-1] + b"\0")
    shutil.copy(out.with_suffix(".json"), changed.with_suffix(".json"))
    with pytest.raises(ValueError, match="SHA-256|refusing"):
        linstab.load_model(str(changed))


def test_a_checkpoint_snapshot_is_a_model_file(short_run, tmp_path, capsys):
    """``linstab snapshot CKPT --out F``: the model of a (running) training's checkpoint as a
    model file marked unfinished; after the last epoch it is the finished model."""
    from linstab.cli.main import main

    out, summary = short_run
    ckpt = Path(summary["checkpoint"])
    snap = tmp_path / "snaps" / "r8-epoch1.safetensors"
    assert main(["snapshot", str(ckpt), "--out", str(snap), "--name", "r8-snap"]) == 0
    assert "after epoch 1/1" in capsys.readouterr().out
    side = json.loads(snap.with_suffix(".json").read_text())
    assert side["completed"] is False and (side["epoch"], side["epochs"]) == (1, 1)
    assert side["registry"]["test_error_jpeg"] is None and side["registry"]["name"] == "r8-snap"
    net, done = linstab.load_model(str(snap)), linstab.load_model(str(out))
    assert net.name == "r8-snap" and net.spec.depth == 8 and net.spec.shortcut == "B"
    x = linstab.default_images([0, 1])[0]
    assert torch.equal(net.predict(x), done.predict(x))
    assert ckpt.is_file()  # only read
    with pytest.raises(ValueError, match="does not exist"):
        training.export_checkpoint(tmp_path / "none.ckpt.pt", snap)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        training.export_checkpoint(ckpt, tmp_path / "x.pt")
    bad = tmp_path / "bad.ckpt.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a linstab training checkpoint"):
        training.export_checkpoint(bad, snap)
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable"):
        training.export_checkpoint(bad, snap)
