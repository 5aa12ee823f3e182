"""Sweep fixes found by a probe: what the summary counts (failed tasks, skipped images, one image),
what is refused before any work (attack parameters) or when reading (manifest format, foreign and
truncated task files), interrupted runs (SIGTERM), and the order of ``--analyses`` on resume.

Models are the seeded tiny networks of ``factories`` (``"factories:make_net"``) and
:func:`slow_tiny` below, imported by name in a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from factories import make_net, tiny_image
from PIL import Image
from torch import nn

import linstab
from linstab.analyses.statistics import bootstrap_ci
from linstab.cli import main as cli_main
from linstab.sweep import (
    Recipe,
    RecipeMismatch,
    SweepWarning,
    factory_model,
    plan_sweep,
    read_manifest,
    read_rows,
    run_sweep,
    store,
)
from linstab.sweep.summary import summarize_sweep, sweep_statistics

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent.parent / "src"
TESTS_ROOT = TESTS.parent
BANDS_11 = Recipe(analyses=("bands",), units="1.1")  # the cheapest recipe: one unit's band counts


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


class _Slow(nn.Module):
    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner = inner
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.inner(x)


def slow_tiny(delay: float = 0.3) -> linstab.Network:
    """The tiny network with a sleep in every forward pass (a task takes >= ``delay``)."""
    return linstab.Network(
        _Slow(make_net("option-B", 0).model, delay).eval(), name="slow", input_shape=(3, 8, 8)
    )


@pytest.fixture(scope="module")
def tiny_spec():
    return factory_model("tiny-B", "factories:make_net", kind="option-B", seed=0)


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory) -> Path:
    """4 tiny images labelled with the tiny net's predictions except image 3 (misclassified);
    FGSM flips images 0-2."""
    x = torch.stack([tiny_image(s) for s in (0, 1, 3, 4)])
    labels = make_net("option-B", 0).predict(x).argmax(1).numpy()
    labels[3] = (labels[3] + 1) % 10
    path = tmp_path_factory.mktemp("imgs") / "tiny.npz"
    np.savez(path, images=x.numpy(), labels=labels)
    return path


def _stat(res: dict, statistic: str, perturbation: str | None = None) -> dict | None:
    (model,) = res["models"].values()
    found = [s for s in model["stats"] if s["statistic"] == statistic and s["perturbation"] == perturbation]
    return found[0] if found else None


def _sweep(tmp_path: Path, spec, images: str, recipe: Recipe = BANDS_11, name: str = "out") -> Path:
    out = tmp_path / name
    run_sweep(out, plan_sweep([spec], images, recipe), workers=0, progress=False)
    return out


# ---- 1. accuracy over the images with a prediction ---------------------------------------------
def test_a_failed_task_is_not_a_wrong_prediction(tiny_spec, tmp_path):
    x = torch.stack([tiny_image(s) for s in (0, 1, 3)])
    labels = make_net("option-B", 0).predict(x).argmax(1).numpy()  # all 3 correct
    x = x.numpy()
    x[1, 0, 0, 0] = np.nan  # image 1: an error row with its label but no prediction
    np.savez(tmp_path / "nan.npz", images=x, labels=labels)
    out = _sweep(tmp_path, tiny_spec, str(tmp_path / "nan.npz"))
    err = [r for r in read_rows(out).to_pylist() if r["status"] == "error"]
    assert len(err) == 1 and err[0]["label"] is not None and err[0]["prediction"] is None
    text, res, _ = summarize_sweep(out, n_resamples=99)
    correct = _stat(res, "correct")
    assert (correct["n"], correct["mean"]) == (2, 1.0)
    assert "(n=2)" in next(line for line in text.splitlines() if "correct" in line)


# ---- 2. flip rate over the attacked images -----------------------------------------------------
def test_the_flip_rate_is_over_the_attacked_images_only(tiny_spec, images_npz, tmp_path):
    recipe = Recipe(analyses=("propagation",), attacks=("fgsm",), units="3.2")
    out = _sweep(tmp_path, tiny_spec, str(images_npz), recipe)
    skipped = [r for r in read_rows(out).to_pylist() if r["status"] == "skipped"]
    assert len(skipped) == 1 and "misclassified" in skipped[0]["message"]
    assert skipped[0]["attack_flipped"] is None  # not attacked: no outcome
    flipped = _stat(sweep_statistics(out, n_resamples=99), "flipped", "fgsm")
    assert (flipped["n"], flipped["mean"]) == (3, 1.0)  # FGSM flipped the 3 correctly classified images
    # a directory written before skipped rows had a null: the misclassified image still does not count
    store.write_task(out, skipped[0]["task_id"], [{**skipped[0], "attack_flipped": False}])
    assert _stat(sweep_statistics(out, n_resamples=99), "flipped", "fgsm") == flipped

    # an attack that fails on a correctly classified image is an attacked image that did not
    # flip; `random` then has no reference norm: not perturbed, no outcome
    weak = Recipe(
        analyses=("propagation",),
        attacks=("fgsm", "random"),
        units="3.2",
        attack_params={"fgsm": {"eps": 1e-6}},
    )
    out = _sweep(tmp_path, tiny_spec, str(images_npz), weak, name="weak")
    rows = read_rows(out).to_pylist()
    assert {r["status"] for r in rows} == {"skipped"}
    assert sorted(r["attack_flipped"] is None for r in rows if r["perturbation"] == "fgsm") == [False] * 3 + [
        True
    ]
    assert all(r["attack_flipped"] is None for r in rows if r["perturbation"] == "random")
    res = sweep_statistics(out, n_resamples=99)
    flipped = _stat(res, "flipped", "fgsm")
    assert (flipped["n"], flipped["mean"]) == (3, 0.0)
    assert _stat(res, "flipped", "random") is None


# ---- 3. attack parameters checked before any work ---------------------------------------------
@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"fgsm": {"bogus": 1}}, TypeError, "fgsm: unknown parameter(s) bogus"),
        ({"pgd": {"steps": 0}}, ValueError, "pgd"),
        ({"fgsm": 3}, TypeError, "expected a dict of keyword arguments"),
        ({"nope": {}}, ValueError, "unknown attacks ['nope']"),
        ([1], TypeError, "expected a dict of per-attack parameters"),
    ],
)
def test_bad_attack_params_are_refused_by_the_recipe(params, error, message):
    with pytest.raises(error, match="attack_params") as info:
        Recipe(analyses=("propagation",), attacks=("fgsm",), attack_params=params)
    assert message in str(info.value)


def test_bad_attack_params_are_refused_before_any_directory_exists(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", "--model", "resnet20-linstab", "--images", "0", "--analyses", "propagation"]
    argv += [
        "--attack-params",
        '{"fgsm": {"bogus": 1}}',
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "linstab sweep: error: attack_params: fgsm: unknown parameter(s) bogus" in err
    assert not out.exists()


# ---- 4. a run stopped by SIGTERM is recorded as interrupted, with the resume hint -------------
def test_a_run_ended_by_systemexit_is_recorded_as_interrupted(tiny_spec, images_npz, tmp_path):
    plan = plan_sweep([tiny_spec], str(images_npz), BANDS_11)

    def stop(task, rows):
        raise SystemExit(143)  # what the CLI raises on SIGTERM

    with pytest.raises(SystemExit):
        run_sweep(tmp_path / "out", plan, workers=0, progress=False, callback=stop)
    run = read_manifest(tmp_path / "out")["runs"][0]
    assert run["interrupted"] is True and "finished" not in run and "stopped" in run
    assert run["ran"] == 1
    res = run_sweep(tmp_path / "out", plan, workers=0, progress=False)
    assert (res.done_before, res.ran) == (1, 3)
    assert "finished" in read_manifest(tmp_path / "out")["runs"][1]


SIGTERM_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {tests_root!r}, {src!r}]
from linstab.cli.main import main
sys.exit(main({argv!r}))
"""


def test_sigterm_stops_the_cli_with_the_resume_hint(tmp_path):
    np.save(tmp_path / "imgs.npy", torch.stack([tiny_image(s) for s in range(6)]).numpy())
    out = tmp_path / "out"
    argv = ["sweep", "--model", "test_sweep_repairs:slow_tiny", "--images", str(tmp_path / "imgs.npy")]
    argv += ["--units", "1.1", "--workers", "0", "--no-progress", "--out", str(out)]
    code = SIGTERM_SCRIPT.format(tests=str(TESTS), tests_root=str(TESTS_ROOT), src=str(SRC), argv=argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not store.done_tasks(out):
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 143, err[-2000:]
    assert "run the same command again to resume" in err
    run = read_manifest(out)["runs"][0]
    assert run["interrupted"] is True and "finished" not in run
    assert 1 <= len(store.done_tasks(out)) < 6


# ---- 5. the order of the analyses (and attacks) does not matter on resume ---------------------
def test_the_order_of_the_analyses_does_not_matter(tiny_spec, images_npz, tmp_path):
    assert Recipe(analyses=("topk", "bands", "topk")).analyses == ("bands", "topk")
    recipe = Recipe(analyses=("topk", "bands"), k=2, units="1.1")
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0", recipe)
    again = Recipe(analyses=("bands", "topk"), k=2, units="1.1")
    res = run_sweep(out, plan_sweep([tiny_spec], f"{images_npz}:0", again), workers=0, progress=False)
    assert (res.done_before, res.ran) == (1, 0)
    # a directory written before the order was canonical resumes in either order
    path = out / store.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["recipe"]["analyses"] = ["topk", "bands"]
    path.write_text(json.dumps(manifest))
    res = run_sweep(out, plan_sweep([tiny_spec], f"{images_npz}:0", again), workers=0, progress=False)
    assert (res.done_before, res.ran) == (1, 0)
    other = Recipe(analyses=("bands",), k=2, units="1.1")
    with pytest.raises(RecipeMismatch, match="analyses"):
        run_sweep(out, plan_sweep([tiny_spec], f"{images_npz}:0", other), workers=0, progress=False)
    # attacks: their order does not change the rows either
    one = Recipe(analyses=("propagation",), attacks=("random", "fgsm"), units="3.2")
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0", one, name="attacks")
    two = Recipe(analyses=("propagation",), attacks=("fgsm", "random"), units="3.2")
    res = run_sweep(out, plan_sweep([tiny_spec], f"{images_npz}:0", two), workers=0, progress=False)
    assert (res.done_before, res.ran) == (1, 0)


# ---- 6. the manifest's format and foreign files ------------------------------------------------
def test_another_format_or_a_foreign_file_is_refused(tiny_spec, images_npz, tmp_path, capsys):
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0-1")
    path = out / store.MANIFEST
    good = path.read_text()
    path.write_text(json.dumps({**json.loads(good), "format": 99}))
    with pytest.raises(ValueError, match="sweep format 99; this linstab reads format 1"):
        sweep_statistics(out, n_resamples=9)
    with pytest.raises(ValueError, match="format 99"):
        run_sweep(out, plan_sweep([tiny_spec], f"{images_npz}:0-1", BANDS_11), workers=0, progress=False)
    assert cli_main(["sweep", "summary", str(out)]) == 2
    assert "sweep format 99" in capsys.readouterr().err
    path.write_text(good)

    rows = out / store.ROWS
    pq.write_table(pa.table({"x": [1, 2]}), rows / "extra.parquet")
    with pytest.raises(ValueError, match=r"extra\.parquet is not a task file"):
        sweep_statistics(out, n_resamples=9)
    (rows / "extra.parquet").rename(rows / "extra-0123456789.parquet")  # a task file's name
    with pytest.raises(
        ValueError, match=r"extra-0123456789\.parquet has another schema(.|\n)*missing columns"
    ):
        sweep_statistics(out, n_resamples=9)
    (rows / "extra-0123456789.parquet").unlink()
    # a task file of another model (copied from another sweep) is named
    other = factory_model("tiny-other", "factories:make_net", kind="option-B", seed=1)
    store.write_task(out, "tiny-other/x", [{**read_rows(out).to_pylist()[0], "model": other.name}])
    with pytest.raises(ValueError, match=r"tiny-other_x-[0-9a-f]{10}\.parquet"):
        sweep_statistics(out, n_resamples=9)


# ---- 7. a truncated task file ------------------------------------------------------------------
def test_a_truncated_task_file_is_named_and_rerun(tiny_spec, images_npz, tmp_path):
    plan = plan_sweep([tiny_spec], f"{images_npz}:0-1", BANDS_11)
    out = tmp_path / "out"
    run_sweep(out, plan, workers=0, progress=False)
    before = read_rows(out).to_pylist()
    victim = out / store.ROWS / plan.tasks[1]["file"]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{victim.name} cannot be read(.|\n)*run the sweep command again"):
        summarize_sweep(out, n_resamples=9)
    with pytest.warns(SweepWarning, match=rf"{victim.name} cannot be read .*moved to .*unreadable"):
        res = run_sweep(out, plan, workers=0, progress=False, retry_errors=True)
    assert (res.done_before, res.ran, res.errors) == (1, 1, 0)
    assert (out / store.UNREADABLE / victim.name).read_bytes() == data[: len(data) // 2]
    assert read_manifest(out)["runs"][1]["set_aside"][0]["file"] == victim.name
    key = lambda r: (r["image"], r["unit"])  # noqa: E731
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=key)  # noqa: E731
    assert strip(read_rows(out).to_pylist()) == strip(before)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SweepWarning)
        summarize_sweep(out, n_resamples=9)
        run_sweep(out, plan, workers=0, progress=False)


# ---- 8. no interval from one image -------------------------------------------------------------
def test_one_image_gives_no_interval(tiny_spec, images_npz, tmp_path):
    assert math.isnan(bootstrap_ci([1.0]).low)  # the convention the summary follows
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0")
    text, res, _ = summarize_sweep(out, n_resamples=99)
    (model,) = res["models"].values()
    assert model["stats"] and all(s["n"] == 1 for s in model["stats"])
    assert all(math.isnan(s["ci_low"]) and math.isnan(s["ci_high"]) for s in model["stats"])
    assert "correct    1 (no interval)  (n=1)" in text
    frac = _stat(res, "frac_plateau")
    assert f"{frac['mean']:.4f} [" not in text  # no zero-width interval
    # two images: intervals again
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0-1", name="two")
    _, res, _ = summarize_sweep(out, n_resamples=99)
    assert all(s["ci_low"] <= s["mean"] <= s["ci_high"] for s in res["models"]["tiny-B"]["stats"])


# ---- 9. found by a probe: checked when planned, damage the footer does not show ------------------
def test_images_of_another_shape_or_units_are_refused_when_planned(tiny_spec, tmp_path):
    with pytest.raises(
        ValueError, match=r"tiny-B takes images of shape 3 x 8 x 8 .*2 of the 2 .*3 x 32 x 32"
    ):
        plan_sweep([tiny_spec], "0-1", BANDS_11)  # was: planned; every task an error row
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, size in (("a.png", 8), ("b.png", 16), ("c.png", 8)):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(folder / name)
    (folder / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")  # left to its task (an error row)
    with pytest.raises(ValueError, match=r"1 of the 4 images .*3 x 16 x 16 \(1, e\.g\. b\.png\)"):
        plan_sweep([tiny_spec], str(folder), BANDS_11)
    assert len(plan_sweep([tiny_spec], f"{folder}:0,2,3", BANDS_11).tasks) == 3
    np.save(tmp_path / "hwc.npy", np.zeros((2, 8, 8, 3), np.float32))  # channels-last, as load_image reads it
    assert len(plan_sweep([tiny_spec], str(tmp_path / "hwc.npy"), BANDS_11).tasks) == 2
    with pytest.raises(ValueError, match="units '4.1' of tiny-B: stage must be in 1..3"):
        plan_sweep([tiny_spec], str(tmp_path / "hwc.npy"), Recipe(units="4.1"))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"analyses": ("propagation",), "seed": 10**20}, ValueError, "seed: expected an int in"),
        ({"analyses": ("topk",), "seed": 2**64}, ValueError, r"seed must be in \["),
        ({"seed": "0"}, TypeError, "seed must be an int, got str"),
        ({"seed": True}, TypeError, "seed must be an int, got bool"),
    ],
)
def test_a_seed_the_analyses_refuse_is_refused_by_the_recipe(kwargs, error, message):
    with pytest.raises(error, match=message):
        Recipe(**kwargs)  # was: accepted; every task an error row


def test_a_task_file_damaged_inside_is_set_aside_and_rerun(tiny_spec, images_npz, tmp_path):
    plan = plan_sweep([tiny_spec], f"{images_npz}:0-1", BANDS_11)
    out = tmp_path / "out"
    run_sweep(out, plan, workers=0, progress=False)
    before = read_rows(out, columns=["image", "frac_above"]).to_pylist()
    victim = out / store.ROWS / plan.tasks[1]["file"]
    meta = pq.ParquetFile(victim).metadata.row_group(0)
    (chunk,) = [
        meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "frac_above"
    ]
    data = bytearray(victim.read_bytes())
    for i in range(chunk.data_page_offset + 3, chunk.data_page_offset + chunk.total_compressed_size - 2):
        data[i] ^= 0x5A  # the page, not the footer
    victim.write_bytes(bytes(data))
    assert store.task_file_problem(victim) is None  # the footer is whole
    with pytest.raises(ValueError, match=rf"{victim.name} cannot be read"):
        read_rows(out)
    with pytest.warns(SweepWarning, match=rf"{victim.name} cannot be read .*moved to"):
        res = run_sweep(out, plan, workers=0, progress=False)  # was: counted as done, never rerun
    assert (res.done_before, res.ran) == (1, 1)
    assert sorted(read_rows(out, columns=["image", "frac_above"]).to_pylist(), key=str) == sorted(
        before, key=str
    )


def test_a_manifest_without_recipe_or_a_rows_file_is_refused(tiny_spec, images_npz, tmp_path, capsys):
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0")
    plan = plan_sweep([tiny_spec], f"{images_npz}:0", BANDS_11)
    path = out / store.MANIFEST
    good = path.read_text()
    path.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "recipe"}))
    with pytest.raises(ValueError, match="holds no recipe") as info:
        run_sweep(out, plan, workers=0, progress=False)  # was: "another recipe", differences ": null"
    assert not isinstance(info.value, RecipeMismatch)
    path.write_text(good)
    rows = out / store.ROWS
    for p in rows.iterdir():
        p.unlink()
    rows.rmdir()
    rows.write_text("")
    with pytest.raises(ValueError, match="rows is not a folder"):
        run_sweep(out, plan, workers=0, progress=False)  # was: FileExistsError after the first task
    with pytest.raises(ValueError, match="rows is not a folder"):
        sweep_statistics(out, n_resamples=9)  # was: "no rows written yet"
    assert len(read_manifest(out)["runs"]) == 1


def test_a_negative_summary_seed_is_named(tiny_spec, images_npz, tmp_path):
    out = _sweep(tmp_path, tiny_spec, f"{images_npz}:0-1")
    with pytest.raises(ValueError, match="seed must be an int >= 0; got -1"):
        sweep_statistics(out, n_resamples=9, seed=-1)  # was: numpy's "expected non-negative integer"


def test_the_cli_prints_a_repair_as_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinymod.py").write_text(
        "from factories import make_net\n\n\ndef net():\n    return make_net('option-B', 0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "imgs.npy", torch.stack([tiny_image(s) for s in range(2)]).numpy())
    out = tmp_path / "out"
    argv = ["sweep", "--model", "tinymod:net", "--images", str(tmp_path / "imgs.npy"), "--units", "1.1"]
    argv += ["--workers", "0", "--no-progress", "--out", str(out)]
    assert cli_main(argv) == 0
    victim = sorted((out / store.ROWS).iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    capsys.readouterr()
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "warning" in x.lower()]
    assert line.startswith("linstab sweep: warning: sweep task file") and "moved to" in line
    assert "SweepWarning" not in err and "run_sweep(" not in err
