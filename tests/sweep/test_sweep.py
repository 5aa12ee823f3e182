"""Sweeps: Dask vs a serial loop, worker deaths, kills and restarts, error rows, CLI validation,
recipe checks, the bootstrap against SciPy, the summary and its figures.

Models are the seeded tiny networks of ``factories`` named by a factory spec
(``"factories:make_net"``, ``"test_sweep:killer_net"``, ``"test_sweep:slow_net"``): the workers of a
LocalCluster import them by name (this folder is on ``sys.path``, which spawned workers inherit).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image
from torch import nn

import linstab
from linstab.cli import main as cli_main
from linstab.sweep import (
    ModelSpec,
    Recipe,
    RecipeMismatch,
    factory_model,
    get_network,
    load_image,
    local_cluster,
    parse_images,
    plan_sweep,
    read_manifest,
    read_rows,
    registry_model,
    run_sweep,
    run_task,
    store,
)
from linstab.sweep.summary import summarize_sweep

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent.parent / "src"
TESTS_ROOT = TESTS.parent
RECIPE = Recipe(analyses=("bands", "topk", "propagation"), attacks=("fgsm", "random"), k=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


# ---- factories imported by name on the workers ----------------------------------------------
def killer_net(marker: str, kind: str = "option-B", seed: int = 0) -> linstab.Network:
    """The tiny network; inside a Dask worker, the first call anywhere kills its own process."""
    net = make_net(kind, seed)
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return net  # not in a worker (the client checksumming the spec, a serial loop)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one process wins
    except FileExistsError:
        return net
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


def other_weights_on_workers(seed: int = 0) -> linstab.Network:
    """The tiny network, with other weights in a Dask worker process (a misconfigured cluster)."""
    import multiprocessing

    if multiprocessing.current_process().name.startswith("Dask Worker"):
        seed += 1
    return make_net("option-B", seed)


class _Slow(nn.Module):
    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner = inner
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.inner(x)


def slow_net(delay: float = 0.3, kind: str = "option-B", seed: int = 0) -> linstab.Network:
    """The tiny network with a sleep in every forward pass (a task takes >= ``delay``)."""
    net = make_net(kind, seed)
    return linstab.Network(_Slow(net.model, delay).eval(), name="slow", input_shape=(3, 8, 8))


# ---- helpers ------------------------------------------------------------------------------------
def _norm(v):
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def _key(r: dict) -> tuple:
    return (r["task_id"], r["analysis"], r["perturbation"] or "", r["unit"] or "")


def canonical(rows: list[dict]) -> list[dict]:
    """Rows without timings, NaN comparable, in a fixed order."""
    out = [{k: _norm(v) for k, v in r.items() if k != "seconds"} for r in rows]
    return sorted(out, key=_key)


def dir_rows(out: Path) -> list[dict]:
    return canonical(read_rows(out).to_pylist())


def loop_rows(plan) -> list[dict]:
    """The reference: a plain loop over the tasks in this process."""
    return canonical([row for t in plan.tasks for row in run_task(t)])


def assert_one_file_per_task(out: Path, plan) -> None:
    files = sorted(p.name for p in (out / store.ROWS).iterdir())
    assert files == sorted(t["file"] for t in plan.tasks)  # no temporaries, no extra files
    keys = [_key(r) for r in read_rows(out).to_pylist()]
    assert len(keys) == len(set(keys))


@pytest.fixture(scope="module")
def tiny_spec() -> ModelSpec:
    return factory_model("tiny-B", "factories:make_net", kind="option-B", seed=0)


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory) -> Path:
    """4 tiny 8x8 images; labels = the tiny net's predictions except image 3 (misclassified).
    FGSM flips images 0-2 (not every seed's image flips below eps 0.3 on this tiny net)."""
    x = torch.stack([tiny_image(s) for s in (0, 1, 3, 4)])
    pred = make_net("option-B", 0).predict(x).argmax(1).numpy()
    labels = pred.copy()
    labels[3] = (pred[3] + 1) % 10
    path = tmp_path_factory.mktemp("imgs") / "tiny.npz"
    np.savez(path, images=x.numpy(), labels=labels)
    return path


def _profiler_state(dask_worker) -> tuple[bool, bool]:
    """On a worker: the profile setting it runs with, and whether it samples the task stacks."""
    import dask

    enabled = bool(dask.config.get("distributed.worker.profile.enabled"))
    return enabled, "profile" in dask_worker.periodic_callbacks


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 single-thread worker processes (started once for the module)."""
    distributed = pytest.importorskip("distributed")
    cluster = local_cluster(2)  # what `linstab sweep --workers 2` starts
    c = distributed.Client(cluster)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:  # see linstab.sweep.local_cluster
        assert set(c.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
    # the workers' statistical profiler is off (and so is its sampling thread)
    assert set(c.run(_profiler_state).values()) == {(False, False)}
    yield c
    c.close()
    cluster.close()


# ---- Dask --------------------------------------------------------------------------------------
def test_dask_sweep_gives_the_rows_of_a_serial_loop(client, tiny_spec, images_npz, tmp_path):
    plan = plan_sweep([tiny_spec], str(images_npz), RECIPE)
    res = run_sweep(tmp_path / "dask", plan, client=client, progress=False)
    assert (res.total, res.ran, res.done_before, res.errors) == (4, 4, 0, 0)
    rows = dir_rows(tmp_path / "dask")
    assert rows == loop_rows(plan)
    assert_one_file_per_task(tmp_path / "dask", plan)
    # 6 units: bands 6 + topk 6 + propagation 2 x 6 rows per classified image; the
    # misclassified image has one skipped row per perturbation instead of propagation rows
    per_task = {t["task_id"]: sum(r["task_id"] == t["task_id"] for r in rows) for t in plan.tasks}
    assert sorted(per_task.values()) == [14, 24, 24, 24]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["perturbation"] for r in skipped} == {"fgsm", "random"}
    assert all("misclassified" in r["message"] for r in skipped)
    ok = [r for r in rows if r["analysis"] == "bands"]
    assert all(r["above"] + r["plateau"] + r["below"] + r["zero"] == r["n"] for r in ok)
    assert all(len(r["topk"]) == 4 for r in rows if r["analysis"] == "topk")
    for r in rows:  # margin: label logit minus the largest other logit
        assert (r["margin"] > 0) == (r["label"] == r["prediction"])


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(client, images_npz, tmp_path):
    marker = tmp_path / "killed"
    spec = factory_model("tiny-kill", "test_sweep:killer_net", marker=str(marker))
    plan = plan_sweep([spec], str(images_npz), RECIPE)
    res = run_sweep(tmp_path / "out", plan, client=client, progress=False)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert int(marker.read_text()) not in client.run(os.getpid).values()  # that process is gone
    assert (res.ran, res.errors) == (4, 0)
    assert dir_rows(tmp_path / "out") == loop_rows(plan)
    assert_one_file_per_task(tmp_path / "out", plan)


def test_an_interrupted_dask_sweep_resumes(client, tiny_spec, images_npz, tmp_path):
    plan = plan_sweep([tiny_spec], str(images_npz), RECIPE)
    out = tmp_path / "out"

    def stop(task, rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(out, plan, client=client, progress=False, callback=stop)
    assert len(store.done_tasks(out)) == 1
    assert read_manifest(out)["runs"][0]["interrupted"] is True
    res = run_sweep(out, plan, client=client, progress=False)
    assert (res.done_before, res.ran) == (1, 3)
    assert_one_file_per_task(out, plan)
    assert dir_rows(out) == loop_rows(plan)


def test_an_existing_cluster_is_used_unchanged_and_checked_first(client, tiny_spec, images_npz, tmp_path):
    address = client.scheduler.address
    plan = plan_sweep([tiny_spec], f"{images_npz}:0-1", Recipe(analyses=("bands",)))
    res = run_sweep(tmp_path / "out", plan, scheduler=address, progress=False)
    assert (res.ran, res.errors) == (2, 0)
    assert read_manifest(tmp_path / "out")["runs"][0]["scheduler"] == address
    assert len(client.scheduler_info()["workers"]) == 2  # the cluster is still there, unchanged
    other = factory_model("tiny-other", "test_sweep:other_weights_on_workers")
    plan = plan_sweep([other], f"{images_npz}:0-1", Recipe(analyses=("bands",)))
    with pytest.raises(ValueError, match="workers cannot load the models(.|\n)*SHA-256 of the state dict"):
        run_sweep(tmp_path / "bad", plan, scheduler=address, progress=False)
    assert not (tmp_path / "bad").exists()  # refused before any directory exists


# ---- kill -9 and restart -------------------------------------------------------------------------
KILL_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {tests_root!r}, {src!r}]
from linstab.sweep import Recipe, factory_model, plan_sweep, run_sweep
spec = factory_model("slow", "test_sweep:slow_net", delay=0.25)
plan = plan_sweep([spec], {images!r}, Recipe(analyses=("bands", "topk"), k=3))
run_sweep({out!r}, plan, workers=0, progress=False)
"""


def test_a_killed_sweep_restarted_has_exactly_one_row_set_per_task(tmp_path):
    x = torch.stack([tiny_image(s) for s in range(8)])
    images = tmp_path / "imgs.npy"
    np.save(images, x.numpy())
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(
        KILL_SCRIPT.format(
            tests=str(TESTS), tests_root=str(TESTS_ROOT), src=str(SRC), images=str(images), out=str(out)
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None and not store.done_tasks(out):
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stderr.close()
    done = len(store.done_tasks(out))
    assert 1 <= done < 8, f"the kill did not interrupt the sweep ({done} of 8 done)"
    assert "finished" not in read_manifest(out)["runs"][0]

    spec = factory_model("slow", "test_sweep:slow_net", delay=0.25)
    plan = plan_sweep([spec], str(images), Recipe(analyses=("bands", "topk"), k=3))
    res = run_sweep(out, plan, workers=0, progress=False)
    assert (res.done_before, res.ran, res.errors) == (done, 8 - done, 0)
    assert_one_file_per_task(out, plan)
    fast = factory_model("slow", "test_sweep:slow_net", delay=0.0)
    ref = loop_rows(plan_sweep([fast], str(images), Recipe(analyses=("bands", "topk"), k=3)))
    assert dir_rows(out) == ref  # same weights (SHA), same rows


# ---- errors --------------------------------------------------------------------------------------
def test_a_corrupt_or_nan_image_is_an_error_row_and_the_others_run(tiny_spec, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    arr = (tiny_image(0).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(folder / "a_good.png")
    (folder / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    plan = plan_sweep([tiny_spec], str(folder), Recipe(analyses=("bands",)))
    res = run_sweep(tmp_path / "out", plan, workers=0, progress=False)
    assert (res.ran, res.errors) == (2, 1)
    rows = read_rows(tmp_path / "out").to_pylist()
    bad = [r for r in rows if r["image"] == "b_corrupt.png"]
    assert len(bad) == 1 and bad[0]["status"] == "error" and bad[0]["analysis"] == "task"
    assert "cannot identify image file" in bad[0]["message"]
    good = [r for r in rows if r["image"] == "a_good.png"]
    assert len(good) == 6 and all(r["status"] == "ok" and r["lossy"] is False for r in good)

    x = torch.stack([tiny_image(1), tiny_image(2)]).numpy()
    x[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    plan = plan_sweep([tiny_spec], str(tmp_path / "nan.npy"), Recipe(analyses=("bands",)))
    run_sweep(tmp_path / "out2", plan, workers=0, progress=False)
    rows = read_rows(tmp_path / "out2").to_pylist()
    nan = [r for r in rows if r["image"] == "nan.npy[1]"]
    assert len(nan) == 1 and nan[0]["status"] == "error" and "NaN" in nan[0]["message"]
    assert sum(r["status"] == "ok" for r in rows) == 6
    # --retry-errors reruns only the failed task (it fails again: still one row set)
    res = run_sweep(tmp_path / "out2", plan, workers=0, progress=False, retry_errors=True)
    assert (res.done_before, res.ran, res.errors) == (1, 1, 1)
    assert_one_file_per_task(tmp_path / "out2", plan)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet-nope"], "unknown model 'resnet-nope'"),
        (["--images", "0-25"], "out of range 0..19"),
        (["--images", "cats"], "bad image spec 'cats'"),
        (["--images", "jpeg:"], "empty selection"),
        (["--analyses", "bands,eigs"], "unknown analysis 'eigs'"),
        (["--analyses", "propagation", "--attack", "fgsm,nope"], "unknown perturbation 'nope'"),
        (["--units", "4.1"], "stage must be in 1..3"),
        (["--k", "0"], "k must be an int >= 1; got 0"),
        (["--attack-params", "{pgd"], "not valid JSON"),
        (["EMPTY"], "empty selection: folder"),
    ],
)
def test_bad_cli_input_fails_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    if argv == ["EMPTY"]:
        (tmp_path / "empty").mkdir()
        argv = ["--images", str(tmp_path / "empty")]
    base = ["sweep", "--model", "resnet20-linstab", "--workers", "0", "--no-progress", "--out", str(out)]
    rc = cli_main([*base, *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert "linstab sweep: error:" in err and message in err
    assert not out.exists()


def test_another_recipe_is_refused_and_a_sub_selection_resumes(tiny_spec, images_npz, tmp_path):
    out = tmp_path / "out"
    plan = plan_sweep([tiny_spec], str(images_npz), Recipe(analyses=("bands",)))
    run_sweep(out, plan, workers=0, progress=False)
    other = plan_sweep([tiny_spec], str(images_npz), Recipe(analyses=("bands",), thresholds=(0.9, 1.1)))
    with pytest.raises(RecipeMismatch, match=r"another recipe(.|\n)*thresholds"):
        run_sweep(out, other, workers=0, progress=False)
    other_model = factory_model("tiny-B", "factories:make_net", kind="option-B", seed=1)
    with pytest.raises(RecipeMismatch, match="sha256"):
        run_sweep(out, plan_sweep([other_model], str(images_npz), Recipe(analyses=("bands",))), workers=0)
    sub = plan_sweep([tiny_spec], f"{images_npz}:0-1", Recipe(analyses=("bands",)))
    res = run_sweep(out, sub, workers=0, progress=False)
    assert (res.total, res.done_before, res.ran) == (2, 2, 0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a sweep directory"):
        run_sweep(tmp_path / "other", plan, workers=0, progress=False)


def test_models_are_verified_by_sha256_on_the_worker(tiny_spec):
    spec = registry_model("resnet20-linstab")
    assert spec.sha256 == linstab.models.REGISTRY["resnet20-linstab"].sha256
    wrong = ModelSpec(name="resnet20-linstab", registry="resnet20-linstab", sha256="0" * 64)
    with pytest.raises(ValueError, match="SHA-256 of the weights file on this worker"):
        get_network(wrong, cache=False)
    bad = ModelSpec.from_dict({**tiny_spec.to_dict(), "sha256": "f" * 64})
    task = {
        "task_id": "x",
        "model": bad.to_dict(),
        "recipe": Recipe().to_dict(),
        "image": parse_images("0").refs[0].to_dict(),
    }
    rows = run_task(task)  # never raises: one error row
    assert len(rows) == 1 and rows[0]["status"] == "error" and "SHA-256" in rows[0]["message"]
    with pytest.raises(ValueError, match="JSON"):
        factory_model("t", "factories:make_net", kind=object())
    with pytest.raises(ValueError, match="module:function"):
        factory_model("t", "make_net")


def test_cli_sweep_of_resnet20_on_2_images_and_2_units(tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "sweep",
        "--model",
        "resnet20-linstab",
        "--images",
        "0-1",
        "--units",
        "3.2,3.3",
        "--analyses",
        "bands,topk",
        "--k",
        "4",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert cli_main(args) == 0
    rows = read_rows(out).to_pylist()
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert {r["unit"] for r in rows} == {"3.2", "3.3"}
    assert all(r["label"] == r["prediction"] and r["lossy"] is False for r in rows)
    man = read_manifest(out)
    assert man["linstab_version"] == linstab.__version__
    assert man["recipe"]["models"][0]["sha256"] == linstab.models.REGISTRY["resnet20-linstab"].sha256
    assert man["image_source"]["lossy"] is False and man["lossy"] is False
    assert man["runs"][0]["argv"][:2] == ["linstab", "sweep"]
    assert cli_main(args) == 0
    assert "0 tasks run, 2 already done" in capsys.readouterr().err
    assert cli_main([*args[:-1], str(out), "--k", "5"]) == 2
    assert "another recipe" in capsys.readouterr().err


# ---- images --------------------------------------------------------------------------------------
def test_jpeg_images_are_indexed_like_the_loader_and_labelled_lossy(tiny_spec, tmp_path):
    from linstab.data import load_cifar10_jpeg

    root = os.environ.get("LINSTAB_CIFAR10_JPEG")
    if not root or not (Path(root) / "test.zip").is_file():
        pytest.skip("needs LINSTAB_CIFAR10_JPEG (../shared/data/cifar10-jpeg)")
    sel = parse_images("jpeg:0-19")
    assert sel.source.lossy and sel.source.size == 10000 and all(r.lossy for r in sel.refs)
    x, y = load_cifar10_jpeg("test", limit=20)
    for i in (0, 7, 19):
        img, label = load_image(sel.refs[i])
        assert torch.equal(img, x[i].float() / 255) and label == int(y[i])
    with pytest.raises(ValueError, match="out of range"):
        parse_images("jpeg:10000")
    spec32 = factory_model("tiny-B32", "factories:make_net", kind="option-B", seed=0, hw=32)  # 32 x 32 images
    plan = plan_sweep([spec32], "jpeg:0-1", Recipe(analyses=("topk",), k=2, units="3.2"))
    run_sweep(tmp_path / "out", plan, workers=0, progress=False)
    rows = read_rows(tmp_path / "out").to_pylist()
    assert len(rows) == 2 and all(r["lossy"] is True and r["status"] == "ok" for r in rows)
    assert {r["image_source"] for r in rows} == {"cifar10-jpeg-test"}
    man = read_manifest(tmp_path / "out")
    assert man["lossy"] is True and man["recipe"]["image_source"]["lossy"] is True


# ---- summary ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_spec() -> ModelSpec:
    """5 units per stage: the jump (last 3 units over the regular units before them) is defined."""
    return factory_model("tiny-B5", "factories:make_net", kind="option-B", seed=8, units=5)


@pytest.fixture(scope="module")
def deep_images_npz(tmp_path_factory) -> Path:
    """The 4 tiny images, labelled with tiny-B5's predictions except image 3 (misclassified);
    FGSM flips images 0-2 of this net."""
    x = torch.stack([tiny_image(s) for s in (0, 1, 3, 4)])
    labels = make_net("option-B", 8, units=5).predict(x).argmax(1).numpy()
    labels[3] = (labels[3] + 1) % 10
    path = tmp_path_factory.mktemp("imgs5") / "tiny5.npz"
    np.savez(path, images=x.numpy(), labels=labels)
    return path


def test_summary_statistics_and_figures(deep_spec, deep_images_npz, tmp_path, capsys):
    out = tmp_path / "out"
    plan = plan_sweep([deep_spec], str(deep_images_npz), RECIPE)
    run_sweep(out, plan, workers=0, progress=False)
    text, res, paths = summarize_sweep(
        out, figures=tmp_path / "fig", json_path=tmp_path / "s.json", n_resamples=999
    )
    m = res["models"]["tiny-B5"]
    assert m["images"] == 4 and m["skipped_rows"] == 2
    assert m["units"] == [f"{s}.{k}" for s in (1, 2, 3) for k in range(1, 6)]
    rows = read_rows(out).to_pylist()
    got = next(s for s in m["stats"] if s["unit"] == "2.2" and s["statistic"] == "frac_plateau")
    vals = [r["frac_plateau"] for r in rows if r["analysis"] == "bands" and r["unit"] == "2.2"]
    assert got["n"] == 4 and got["mean"] == pytest.approx(np.mean(vals))
    assert got["ci_low"] <= got["mean"] <= got["ci_high"]
    jump = next(s for s in m["stats"] if s["statistic"] == "jump_ratio" and s["perturbation"] == "fgsm")
    assert jump["n"] == 3  # the misclassified image has none
    assert "band fractions per unit" in text and "spearman(margin, jump_ratio) fgsm" in text
    names = sorted(p.name for p in paths)
    for stem in ("bands", "jump_ratio", "attack_radius", "margin_correlation"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert cli_main(["sweep", "summary", str(out), "--resamples", "99"]) == 0
    assert "== tiny-B5: 4 images" in capsys.readouterr().out
    # importing the sweep modules and drawing never loads pyplot or selects a backend
    code = (
        "import sys; import linstab.sweep, linstab.sweep.summary, linstab.cli.sweep\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        f"linstab.sweep.summary.summarize_sweep({str(out)!r}, figures={str(tmp_path / 'f2')!r},"
        " n_resamples=9)\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("MPLBACKEND", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_the_attacks_revision_is_part_of_an_attacking_recipe_only(
    tiny_spec, images_npz, tmp_path, monkeypatch
):
    from linstab.sweep import engine

    attacking = plan_sweep(
        [tiny_spec], f"{images_npz}:0", Recipe(analyses=("propagation",), attacks=("fgsm",))
    )
    bands_only = plan_sweep([tiny_spec], f"{images_npz}:0", Recipe(analyses=("bands",)))
    assert attacking.recipe_dict()["attack_revision"] == engine.ATTACK_REVISION
    assert "attack_revision" not in bands_only.recipe_dict()
    run_sweep(tmp_path / "a", attacking, workers=0, progress=False)
    run_sweep(tmp_path / "b", bands_only, workers=0, progress=False)
    monkeypatch.setattr(engine, "ATTACK_REVISION", engine.ATTACK_REVISION + 1)
    with pytest.raises(RecipeMismatch, match="attack_revision"):
        run_sweep(tmp_path / "a", attacking, workers=0, progress=False)
    res = run_sweep(tmp_path / "b", bands_only, workers=0, progress=False)  # still resumable
    assert (res.done_before, res.ran) == (1, 0)
