"""ImageNet networks through the command line: ResNet-18 at 64 x 64, random weights, end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from linstab.cli import main


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray((rng.random((90, 120, 3)) * 255).astype(np.uint8)).save(path)
    return path


MODEL = ["--model", "torchvision:resnet18", "--input-size", "64"]


def test_predict_info_and_jacobian_test(image_file, capsys):
    assert main(["predict", *MODEL, "--images", str(image_file), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and 0 <= rows[0]["pred"] < 1000
    assert main(["info", *MODEL]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out and "2.1" in out and "conv-bn" in out
    assert main(["jacobian-test", *MODEL, "--image", str(image_file), "--unit", "2.1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["unit"] == "2.1"


def test_spectrum_topk_of_a_unit(image_file, tmp_path):
    out = tmp_path / "s.npz"
    args = ["spectrum", *MODEL, "--image", str(image_file), "--unit", "1.2", "--method", "topk", "--k", "3"]
    assert main([*args, "--out", str(out)]) == 0
    with np.load(out) as z:
        values = z["singular_values"]
    assert values.shape == (3,) and np.all(np.diff(values) <= 0) and values[0] > 0


def test_bad_inputs_are_refused(image_file, tmp_path, capsys):
    # CIFAR default images for a 64 x 64 ImageNet network
    assert main(["predict", *MODEL, "--images", "0-2"]) == 2
    assert "'0-2' are 32 x 32" in capsys.readouterr().err  # the ImageNet loader's own message
    # an image file of another size for a CIFAR network: the hint names what the CLI can do
    Image.new("RGB", (48, 40)).save(tmp_path / "wide.png")
    assert main(["predict", "--model", "resnet20-linstab", "--images", str(tmp_path / "wide.png")]) == 2
    assert "are 40 x 48; resnet20-linstab takes 32 x 32 images: resize them" in capsys.readouterr().err
    # a non-finite image
    bad = tmp_path / "nan.npy"
    arr = np.full((1, 3, 64, 64), 0.5, dtype=np.float32)
    arr[0, 0, 0, 0] = np.nan
    np.save(bad, arr)
    assert main(["predict", *MODEL, "--images", str(bad)]) == 2
    assert "finite" in capsys.readouterr().err.lower()
    # --input-size on a CIFAR model, weights of another architecture, a size of 0
    assert main(["predict", "--model", "resnet20-linstab", "--input-size", "64", "--images", "0"]) == 2
    assert main(["info", "--model", "torchvision:resnet18", "--input-size", "0"]) == 2
    assert "input_size" in capsys.readouterr().err
    wrong = tmp_path / "r20.pt"
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3)}, wrong)
    assert main(["predict", *MODEL, "--weights", str(wrong), "--images", str(image_file)]) == 2
    assert "missing" in capsys.readouterr().err


def test_report_estimates_units_above_exact_max(image_file, tmp_path):
    """`linstab report` on an ImageNet network: units above --exact-max get top-k values and
    band estimates with intervals (marked), smaller units stay exact."""
    out = tmp_path / "rep"
    args = ["report", "--model", "torchvision:resnet18", "--input-size", "32", "--images", str(image_file)]
    args += [
        "--exact-max",
        "1024",
        "--sections",
        "spectra",
        "--no-progress",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = list(csv.DictReader((out / "data" / "figure2_bands.csv").open()))
    routes = {r["address"]: r["route"] for r in rows}
    assert {a for a, r in routes.items() if r == "estimate-slq"} == {
        "1.1",
        "1.2",
        "2.1",
        "2.2",
    }  # > 1024 values
    for r in rows:
        if r["route"] == "estimate-slq":
            for b in ("above", "plateau", "below", "zero"):
                assert float(r[f"{b}_lower"]) <= float(r[b]) <= float(r[f"{b}_upper"]), r
    assert "ESTIMATES" in (out / "index.html").read_text()
    assert main([*args[:-2], "--out", str(tmp_path / "bad"), "--exact-max", "0"]) == 2
