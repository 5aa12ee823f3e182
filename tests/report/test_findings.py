"""Findings: their CSV record, the Markdown table generated from it, and the sweep hook."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import ROOT, make_net, tiny_image

from linstab.analyses.statistics import Estimate, RankTest
from linstab.io.tables import write_csv
from linstab.report import ReportConfig, build_report
from linstab.report.context import FINDING_FIELDS, describe_images
from linstab.report.findings import findings_markdown, findings_table, make_finding, read_findings
from linstab.report.rules import directional, not_testable
from linstab.report.sweep import SWEEP_BAND_COLUMNS, sweep_band_rows, sweep_checksums


def _findings():
    e = Estimate(0.3, 0.2, 0.4, 20, 3)
    t = RankTest(190.0, 0.0004, 20, "exact", "greater")
    return [
        make_finding("Perturbations", "A | claim", "per image: x", directional(e, t, "greater"), e, t,
                     test_what="a - b > 0", images="cifar10-test-0..19 (20 images, lossless)", measured="m"),
        make_finding("Perturbations", "Another", "per image: y", not_testable("the last stage has 3 units")),
    ]  # fmt: skip


def test_finding_rows_and_markdown_table(tmp_path):
    f = _findings()
    assert f[0].verdict == "reproduced" and f[0].n_seeds == 3 and "Wilcoxon" in f[0].test
    assert tuple(f[0].row()) == FINDING_FIELDS
    assert math.isnan(f[1].value) and f[1].why == "the last stage has 3 units"
    path = write_csv([x.row() for x in f], tmp_path / "findings.csv", FINDING_FIELDS, empty_nan=True)
    rows = read_findings(path)
    table = findings_markdown(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| section | claim")
    assert "A \\| claim" in lines[2]  # pipes escaped
    assert "0.3 [0.2, 0.4]" in lines[2] and "20 x 3 seeds" in lines[2] and "0.0004" in lines[2]
    assert "**not testable** (the last stage has 3 units)" in lines[3]
    assert "rule" in findings_table(path, rules=True).splitlines()[0]
    with pytest.raises(ValueError, match="not a findings.csv"):
        read_findings(write_csv([{"a": 1}], tmp_path / "other.csv"))


def test_findings_table_script(tmp_path, capsys):
    rows = [x.row() for x in _findings()]
    path = write_csv(rows, tmp_path / "findings.csv", FINDING_FIELDS, empty_nan=True)
    script = runpy.run_path(str(ROOT / "benchmarks" / "findings_table.py"), run_name="findings_table")
    assert script["main"]([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| section |") and out.count("\n") == 4
    assert script["main"]([str(tmp_path / "no.csv")]) == 2
    assert "error" in capsys.readouterr().err


def test_describe_images():
    assert (
        describe_images([f"cifar10-test-{i}" for i in range(20)])
        == "cifar10-test-0..19 (20 images, lossless)"
    )
    assert "lossy JPEG" in describe_images(["cifar10-jpeg-test-3 (lossy)", "cifar10-jpeg-test-4 (lossy)"])
    assert describe_images([]) == "no images"


# ---- the sweep hook: a hand-made table in the sweep's format -------------------------------------
def _sweep_table(path: Path, net, images: list[str]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = []
    for k, image in enumerate(images):
        for u in net.units:
            n = u.n_out
            plateau = int(n * (0.2 + 0.05 * u.index + 0.01 * k))  # grows along each stage
            zero = int(n * 0.3)
            above = int(n * 0.1)
            rows.append({"model": net.name, "image": image, "lossy": True, "analysis": "bands",
                         "status": "ok", "unit": u.address, "stage": u.stage, "unit_index": u.index,
                         "kind": u.kind, "n": n, "above": above, "plateau": plateau,
                         "below": n - above - plateau - zero, "zero": zero,
                         "exact_ones": plateau // 2})  # fmt: skip
    rows.append({**rows[0], "analysis": "topk"})  # other analyses and models are ignored
    rows.append({**rows[0], "model": "other", "image": "x"})
    rows.append({**rows[0], "status": "error", "image": "y"})
    (path / "rows").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "rows" / "part-0.parquet")
    return path


def test_sweep_band_rows_from_a_hand_made_table(tmp_path):
    net = make_net("option-A", seed=2)
    images = [f"cifar10-jpeg-test-{i} (lossy)" for i in range(7)]
    d = _sweep_table(tmp_path / "sweep", net, images)
    rows = sweep_band_rows(d, net.name)
    assert len(rows) == 7 * len(net.units)
    assert {r["image"] for r in rows} == set(images) and all(r["lossy"] for r in rows)
    r = rows[0]
    assert r["frac_plateau"] == pytest.approx(r["plateau"] / r["n"]) and r["frac_exact_ones"] is not None
    assert sweep_band_rows(d, "no-such-model") == []
    assert sweep_band_rows(d / "rows", net.name) == rows  # the rows folder itself works too
    with pytest.raises(FileNotFoundError):
        sweep_band_rows(tmp_path / "missing", net.name)
    assert "exact_ones" in SWEEP_BAND_COLUMNS


def test_report_reads_figure2_from_the_sweep(tmp_path):
    net = make_net("option-A", seed=2)
    images = [f"cifar10-jpeg-test-{i} (lossy)" for i in range(7)]
    d = _sweep_table(tmp_path / "sweep", net, images)
    small = tmp_path / "images.npy"  # 8 x 8 images keep the report's own spectra cheap
    np.save(small, torch.stack([tiny_image(s) for s in range(2)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), quick=True, out=tmp_path / "out",
                       cache_dir=tmp_path / "c", progress=False, sweep_dir=d)  # fmt: skip
    index = build_report(cfg, ("spectra",), nets=[net])
    out = index.parent
    fig2 = (out / "data" / "figure2_bands.csv").read_text()
    assert fig2.count("cifar10-jpeg-test-") == 7 * len(net.units)
    page = index.read_text()
    assert "sweep folder" in page and "7 images" in page and "lossy JPEG" in page
    trend = [
        r for r in read_findings(out / "data" / "findings.csv") if "greater than 1 decreases" in r["claim"]
    ]
    assert len(trend) == 1 and "sweep folder" in trend[0]["images"] and trend[0]["n_images"] == "7"


def test_sweep_band_rows_read_a_real_sweep(tmp_path):
    """The hook reads what ``linstab sweep`` writes (a serial sweep of a tiny factory model)."""
    sweep = pytest.importorskip("linstab.sweep")
    x = torch.stack([tiny_image(s) for s in range(3)])
    images = tmp_path / "tiny.npz"
    np.savez(images, images=x.numpy())
    spec = sweep.factory_model("tiny-B", "factories:make_net", kind="option-B", seed=0)
    plan = sweep.plan_sweep([spec], str(images), sweep.Recipe(analyses=("bands",)))
    sweep.run_sweep(tmp_path / "out", plan, workers=0, progress=False)
    rows = sweep_band_rows(tmp_path / "out", "tiny-B")
    net = make_net("option-B", seed=0)
    assert len(rows) == 3 * len(net.units) and len({r["image"] for r in rows}) == 3
    for r in rows:
        assert r["above"] + r["plateau"] + r["below"] + r["zero"] == r["n"]
        assert r["frac_zero"] == pytest.approx(r["zero"] / r["n"]) and not r["lossy"]


def _tiny_sweep(tmp_path: Path, out: str, **recipe) -> Path:
    sweep = pytest.importorskip("linstab.sweep")
    images = tmp_path / "tiny.npz"
    np.savez(images, images=torch.stack([tiny_image(s) for s in range(1)]).numpy())
    spec = sweep.factory_model("tiny-B", "factories:make_net", kind="option-B", seed=0)
    plan = sweep.plan_sweep([spec], str(images), sweep.Recipe(analyses=("bands",), units="1.1", **recipe))
    sweep.run_sweep(tmp_path / out, plan, workers=0, progress=False)
    return tmp_path / out


def test_the_sweep_hook_refuses_other_weights_and_other_band_limits(tmp_path):
    """A sweep folder's band rows are the report's only for the same weights and band limits: a model
    of the same name with other weights, or counts with other --thresholds or of float32
    linearizations, are refused, not shown."""
    d = _tiny_sweep(tmp_path, "same")
    same = make_net("option-B", seed=0)
    assert len(sweep_band_rows(d, "tiny-B", sweep_checksums(same))) == 1
    with pytest.raises(ValueError, match="holds 'tiny-B' with weights SHA-256 .* another model"):
        sweep_band_rows(d, "tiny-B", sweep_checksums(make_net("option-B", seed=1)))
    other = _tiny_sweep(tmp_path, "other", thresholds=(0.9, 1.1))
    with pytest.raises(ValueError, match=r"thresholds \[0.9, 1.1\] .* uses \[0.99, 1.01\]"):
        sweep_band_rows(other, "tiny-B", sweep_checksums(same))
    single = _tiny_sweep(tmp_path, "single", dtype="float32")
    with pytest.raises(ValueError, match="float32 linearizations.*--dtype float64"):
        sweep_band_rows(single, "tiny-B", sweep_checksums(same))


def test_the_sweep_hook_names_damaged_task_files_and_other_formats(tmp_path):
    """``report --sweep-dir`` read rows/ as one Parquet dataset: a truncated task file stopped it
    with pyarrow's "magic bytes not found"; it reads the sweep's task files as the sweep does."""
    import json
    import re

    d = _tiny_sweep(tmp_path, "damaged")
    (task,) = (d / "rows").glob("*.parquet")
    task.write_bytes(task.read_bytes()[:100])
    with pytest.raises(
        ValueError, match=rf"(?s){re.escape(task.name)} cannot be read.*run the sweep command again"
    ):
        sweep_band_rows(d, "tiny-B")
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ValueError, match="sweep format 99"):
        sweep_band_rows(d, "tiny-B")


def test_a_missing_or_unfit_sweep_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    """``--sweep-dir`` is checked before the report computes anything (it was read only after the
    Jacobian section: minutes of work, then the error)."""
    import linstab.report.build as build

    def no_work(*args, **kwargs):
        raise AssertionError("the report started working")

    monkeypatch.setattr(build, "ReportContext", no_work)
    net = make_net("option-B", seed=1)
    net.name = "tiny-B"  # the sweep's model name, other weights
    for sweep_dir, error, match in (
        (tmp_path / "missing", FileNotFoundError, "sweep folder .*missing does not exist"),
        (_tiny_sweep(tmp_path, "s"), ValueError, "another model under the same name"),
    ):
        cfg = ReportConfig(models=[], images=str(tmp_path / "tiny.npz"), quick=True, out=tmp_path / "out",
                           cache_dir=tmp_path / "c", progress=False, sweep_dir=sweep_dir)  # fmt: skip
        with pytest.raises(error, match=match):
            build_report(cfg, nets=[net])
    assert not (tmp_path / "out").exists()


def test_stage_trend_claims_are_not_testable_on_one_stage():
    """On a one-stage network the "third stage" trends were computed on stage 1 (the first stage as
    well) and read "not reproduced"; the early-stage ones said "no finite value to test"."""
    from types import SimpleNamespace

    from linstab.report.spectra import _trend_findings

    rows = []
    for image in ("a", "b", "c"):
        for k in range(1, 7):
            f = {"above": 0.1, "plateau": 0.5 - 0.05 * k, "below": 0.2, "zero": 0.2 + 0.05 * k}
            rows.append({"image": image, "stage": 1, "unit": k, "kind": "regular",
                         **{f"frac_{b}": v for b, v in f.items()}})  # fmt: skip
    one = SimpleNamespace(name="one-stage", stages=[list(range(6))])
    found = _trend_findings("spectra", one, rows, "this run", 0)
    staged = [f for f in found if "stage" in f.claim]
    assert staged and all(f.verdict == "not testable" and "has one stage" in f.why for f in staged)
    whole = [f for f in found if "stage" not in f.claim]
    assert whole and all(f.verdict != "not testable" for f in whole)  # through the network: testable
    two = SimpleNamespace(name="two-stage", stages=[list(range(6)), list(range(6))])
    rows2 = rows + [{**r, "stage": 2} for r in rows]
    assert all(f.verdict != "not testable" for f in _trend_findings("spectra", two, rows2, "this run", 0))
