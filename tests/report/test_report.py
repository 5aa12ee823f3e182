"""The one-command report: files, cache reuse, generated text, and a headless-browser check."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image
from report_checks import CHROMIUM, images_loaded

import linstab
from linstab.report import ReportConfig, build_report
from linstab.report.context import FINDING_FIELDS
from linstab.report.findings import read_findings
from linstab.report.rules import VERDICTS


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    net = make_net("option-A", seed=2, hw=32)
    cfg = ReportConfig(
        models=[], images=[0, 1], quick=True, out=tmp / "out", cache_dir=tmp / "cache", progress=False
    )
    t0 = time.perf_counter()
    index = build_report(cfg, ("jacobian", "ablations", "dynamics"), nets=[net])
    cold = time.perf_counter() - t0
    return cfg, net, index, cold, tmp


def test_report_files_and_text(tiny_report):
    cfg, net, index, _, _ = tiny_report
    out = index.parent
    assert index.name == "index.html" and index.is_file()
    env = json.loads((out / "environment.json").read_text())
    assert env["models"][0]["name"] == net.name and "torch" in env and "timings" in env
    page = index.read_text()
    imgs = re.findall(r"<img src='([^']+)'", page)
    assert len(imgs) >= 3
    for src in imgs:
        assert (out / src).is_file(), src
    for link in re.findall(r"<a href='(data/[^']+)'", page):
        assert (out / link).is_file(), link
    # every finding: its fields, a known verdict, a rule; a statistic where it is testable
    findings = read_findings(out / "data" / "findings.csv")
    assert list(findings[0]) == list(FINDING_FIELDS)
    for f in findings:
        assert f["verdict"] in VERDICTS and f["rule"] and f["statistic"], f
        assert f["images"] and ("cifar10-test-" in f["images"]), f["images"]
    # text is generated from the numbers: the measured Taylor order appears in the page
    rows = (out / "data" / "jacobian_tests.csv").read_text().splitlines()
    assert len(rows) > 1 and "order" in rows[0]
    assert "Findings" in page and ("reproduced" in page)


def test_report_cache_makes_second_run_fast(tiny_report):
    cfg, net, index, cold, tmp = tiny_report
    index2 = build_report(replace(cfg, out=tmp / "out2"), ("jacobian", "ablations", "dynamics"), nets=[net])
    env = json.loads((index2.parent / "environment.json").read_text())
    # every cached result (ablations and eigenvalues included) comes from the cache, unchanged
    assert env["cache"]["hits"] >= 2 and env["cache"]["misses"] == 0, env["cache"]
    for name in ("ablations.csv", "eigenvalues.csv"):
        a = (index.parent / "data" / name).read_text()
        assert a == (index2.parent / "data" / name).read_text(), name


def test_a_rerun_into_the_same_folder_takes_over_unchanged_figures(tiny_report):
    """The report is built in a fresh staging folder; figures whose inputs did not change are
    taken from the report being replaced, not drawn again (a cached rerun was 3 s -> 20 s)."""
    cfg, net, _, _, tmp = tiny_report
    cfg3 = replace(cfg, out=tmp / "out3")
    build_report(cfg3, ("jacobian", "ablations", "dynamics"), nets=[net])
    figs = sorted(p for p in (tmp / "out3" / "figures").rglob("*") if p.suffix in (".png", ".svg"))
    assert figs
    before = {p: p.stat().st_mtime_ns for p in figs}
    index = build_report(cfg3, ("jacobian", "ablations", "dynamics"), nets=[net])
    after = sorted(p for p in (tmp / "out3" / "figures").rglob("*") if p.suffix in (".png", ".svg"))
    assert after == figs
    assert {p: p.stat().st_mtime_ns for p in after} == before  # not drawn again
    page = index.read_text()
    for src in re.findall(r"<img src='([^']+)'", page):
        assert (index.parent / src).is_file(), src
    assert not list(tmp.glob(".out3.linstab-partial-*"))  # nothing left beside it


def test_report_two_models_side_by_side(tmp_path):
    """Two models: per-model sections, figures and data in per-model folders, findings tagged."""
    nets = [make_net("option-A", seed=2, hw=32), make_net("option-B", seed=3, hw=32)]
    cfg = ReportConfig(models=[], images=[0], quick=True, out=tmp_path / "out", cache_dir=tmp_path / "c",
                       progress=False)  # fmt: skip
    index = build_report(cfg, ("jacobian", "ablations"), nets=nets)
    out, page = index.parent, index.read_text()
    for net in nets:
        assert f"- {net.name}" in page
        assert any((out / "figures" / net.name).iterdir()), net.name
        assert (out / "data" / net.name / "ablations.csv").is_file()
    imgs = re.findall(r"<img src='([^']+)'", page)
    assert {Path(src).parts[1] for src in imgs} == {"option-A", "option-B"}
    for src in imgs + re.findall(r"<a href='(data/[^']+)'", page):
        assert (out / src).is_file(), src
    sections = (out / "data" / "findings.csv").read_text()
    assert "(option-A)" in sections and "(option-B)" in sections


def test_report_refuses_two_models_of_one_name_before_any_work(tmp_path):
    """Two networks named alike would share their figures, data and findings: refused up front."""
    a, b = make_net("option-B", seed=2, hw=32), make_net("option-B", seed=3, hw=32)
    assert a.name == b.name
    cfg = ReportConfig(models=[], images=[0], quick=True, out=tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="distinct names.*'option-B' comes more than once"):
        build_report(cfg, ("jacobian",), nets=[a, b])
    assert not (tmp_path / "out").exists()
    b.name = "option-B-seed3"
    index = build_report(cfg, ("jacobian",), nets=[a, b])
    assert (index.parent / "data" / "option-B-seed3").is_dir()


def test_report_image_specs_are_labelled(tmp_path):
    """A spec string selects the images; lossy JPEG images are labelled in the findings and the record."""
    net = make_net("option-A", seed=2, hw=32)
    cfg = ReportConfig(models=[], images="1,3", quick=True, out=tmp_path / "a", cache_dir=tmp_path / "c",
                       progress=False)  # fmt: skip
    out = build_report(cfg, ("jacobian",), nets=[net]).parent
    env = json.loads((out / "environment.json").read_text())
    assert env["image_ids"] == ["cifar10-test-1", "cifar10-test-3"] and not env["lossy"]
    assert "lossless" in env["images"]
    if not os.environ.get("LINSTAB_CIFAR10_JPEG"):
        pytest.skip("needs LINSTAB_CIFAR10_JPEG for the jpeg: images")
    cfg = replace(cfg, images="jpeg:0-1", out=tmp_path / "b")
    out = build_report(cfg, ("jacobian",), nets=[net]).parent
    env = json.loads((out / "environment.json").read_text())
    assert env["lossy"] and all("(lossy)" in i for i in env["image_ids"])
    (f,) = read_findings(out / "data" / "findings.csv")
    assert "lossy JPEG" in f["images"]


def test_report_bad_sections(tmp_path):
    with pytest.raises(ValueError, match="unknown sections"):
        build_report(ReportConfig(models=["x"], images=[0], out=tmp_path), ("nope",))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_opens_in_headless_chromium(tiny_report):
    _, _, index, _, tmp = tiny_report
    loaded = images_loaded(index, tmp)
    n, total = (int(v) for v in loaded.split("/"))
    assert total >= 3 and n == total, loaded


def test_report_refuses_bad_weights_before_any_work(tmp_path):
    bad = ReportConfig(models=["resnet20-linstab"], images=[0], out=tmp_path / "r", weights=["a", "b"])
    with pytest.raises(ValueError, match="one weights file per model"):
        build_report(bad)
    assert not (tmp_path / "r").exists()


def test_band_rows_are_computed_once_per_run_even_without_a_cache(tmp_path, monkeypatch):
    """Figure 1's fractions, Figure 2 and the fifth units share their band rows within a run."""
    import linstab.report.spectra as spectra_section

    calls = []
    real = spectra_section.unit_bands

    def counting(net, image, **kw):
        calls.append((float(image.sum()), tuple(kw["units"])))
        return real(net, image, **kw)

    monkeypatch.setattr(spectra_section, "unit_bands", counting)
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s, hw=16) for s in range(2)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), out=tmp_path / "out", use_cache=False, workers=1)
    cfg.progress = False
    build_report(cfg, ("spectra",), nets=[make_net("option-A", seed=4, hw=16)])
    assert calls and len(calls) == len(set(calls))


def test_report_cache_tells_same_named_networks_apart(tmp_path):
    """Two networks of one name (a user's model before and after fine-tuning) share a cache
    folder without reading each other's results."""
    a, b = make_net("option-B", seed=2, hw=16), make_net("option-B", seed=5, hw=16)
    assert a.name == b.name
    small = tmp_path / "images.npy"
    np.save(small, tiny_image(0, hw=16)[None].numpy())
    cfg = ReportConfig(
        models=[], images=str(small), quick=True, out=tmp_path / "a", cache_dir=tmp_path / "c", progress=False
    )
    spectra = []
    for net, out in ((a, "a"), (b, "b")):
        index = build_report(replace(cfg, out=tmp_path / out), ("spectra",), nets=[net])
        arrays = np.load(index.parent / "data" / "figure1_spectra.npz")
        spectra.append({k: arrays[k] for k in arrays.files if "|error" not in k})
    assert spectra[0].keys() == spectra[1].keys()
    assert all(not np.array_equal(spectra[0][k], spectra[1][k]) for k in spectra[0])


def _same_csv(rows1: list[list[str]], rows2: list[list[str]], skip: tuple[str, ...] = ()) -> None:
    """Two CSV tables are equal up to rounding (thread counts differ), columns ``skip`` aside."""
    assert rows1[0] == rows2[0] and len(rows1) == len(rows2) > 1
    keep = [j for j, name in enumerate(rows1[0]) if name not in skip]
    for a, b in zip(rows1[1:], rows2[1:], strict=True):
        for x, y in ((a[j], b[j]) for j in keep):
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                assert x == y
                continue
            same = math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-12)
            assert same or (math.isnan(fx) and math.isnan(fy)), (x, y)


def test_work_beside_the_spectra_gives_the_same_report(tmp_path):
    """With workers, the Taylor tests run in worker processes, and Figures 3-4's attacks and the
    dynamics section's eigenvalues and Lyapunov spectrum in background processes beside the
    spectra: the same data and the same cache counts as one process doing everything in order."""
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s, hw=16) for s in range(3)]).numpy())
    out = {}
    names = ("jacobian_tests.csv", "propagation.csv", "eigenvalues.csv", "lyapunov_stages.csv")
    for workers in (1, 2):
        cfg = ReportConfig(models=[], images=str(small), attacks=("fgsm",), out=tmp_path / f"o{workers}",
                           cache_dir=tmp_path / f"c{workers}", progress=False, seeds=2, quick=True,
                           workers=workers)  # fmt: skip
        index = build_report(
            cfg,
            ("jacobian", "spectra", "propagation", "dynamics"),
            nets=[make_net("option-A", seed=2, hw=16)],
        )
        env = json.loads((index.parent / "environment.json").read_text())
        tables = []
        for name in names:
            with open(index.parent / "data" / name, newline="") as f:
                tables.append(list(csv.reader(f)))
        out[workers] = (env["cache"], tables)
    assert out[1][0] == out[2][0] and out[2][0]["hits"] == 0 and out[2][0]["misses"] > 0
    assert all(len(t) > 1 for t in out[1][1]), [len(t) for t in out[1][1]]  # every table has rows
    for name, t1, t2 in zip(names, out[1][1], out[2][1], strict=True):
        _same_csv(t1, t2, skip=("seconds",) if name == "eigenvalues.csv" else ())


def test_model_key_is_each_networks_fingerprint_once_per_report(tmp_path, monkeypatch):
    """ReportContext.model_key: the network's fingerprint, computed once per network and run,
    never another network's (also when a network object is gone and its id is reused)."""
    from linstab.report.context import ReportContext

    ctx = ReportContext(ReportConfig(models=[], images=[0], out=tmp_path / "o", cache_dir=tmp_path / "c"))
    a, b = make_net("option-A", seed=2, hw=32), make_net("option-B", seed=3, hw=32)
    calls = []
    fp = type(a).fingerprint
    monkeypatch.setattr(type(a), "fingerprint", lambda self: calls.append(self) or fp(self))
    assert ctx.model_key(a) == fp(a) and ctx.model_key(b) == fp(b) != fp(a)
    assert ctx.model_key(a) == fp(a) and [id(n) for n in calls] == [id(a), id(b)]
    ctx._model_keys[id(b)] = (a, fp(a))  # an entry left by another object under b's id
    assert ctx.model_key(b) == fp(b)


def test_report_config_refuses_bad_seeds_and_attacks_before_any_work(tmp_path):
    for kw, msg in (
        ({"seeds": 0}, "seeds"),
        ({"seeds": -1}, "seeds"),
        ({"attacks": ("bogus",)}, "unknown attacks"),
        ({"attacks": "fgsm"}, "sequence of attack names"),
        ({"attacks": ("fgsm", "fgsm")}, "each attack once"),
    ):
        with pytest.raises((ValueError, TypeError), match=msg):
            ReportConfig(models=[], images=[0], out=tmp_path, **kw)
    assert ReportConfig(models=[], images=[0], attacks=["pgd"]).attacks == ("pgd",)


def test_a_report_replaces_the_earlier_one_whole_and_a_failed_run_leaves_it(tmp_path, monkeypatch):
    """A report into the folder of an earlier one: the earlier model's folders and tables go (no
    stale file), a user's other files stay; a run that fails leaves the earlier report as it was
    and no staging folder; a file where the folder should be is refused before any work."""
    import linstab.report.build as build

    small = tmp_path / "images.npy"
    np.save(small, tiny_image(0)[None].numpy())
    nets = [make_net("option-A", seed=2), make_net("option-B", seed=3)]
    out = tmp_path / "out"
    cfg = ReportConfig(models=[], images=str(small), quick=True, out=out, use_cache=False, progress=False)
    build_report(cfg, ("jacobian",), nets=nets)
    assert (out / "data" / "option-B").is_dir() and (out / "figures" / "option-B").is_dir()
    (out / "notes.txt").write_text("mine")
    index = build_report(cfg, ("jacobian",), nets=nets[:1])
    assert index == out / "index.html" and "option-B" not in index.read_text()
    assert not (out / "data" / "option-B").exists() and not (out / "figures" / "option-B").exists()
    assert (out / "notes.txt").read_text() == "mine"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def failing(*args, **kwargs):
        raise RuntimeError("a section failed")

    monkeypatch.setattr(build, "section_jacobian_tests", failing)
    with pytest.raises(RuntimeError, match="a section failed"):
        build_report(cfg, ("jacobian",), nets=nets[1:])
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy", "out"]  # no staging folder
    monkeypatch.undo()
    # a killed run's staging folder (its process gone) is removed by the next run; a running one's stays
    gone = subprocess.Popen(["true"])  # a process that has ended: its pid is free
    gone.wait()
    stale = tmp_path / f".out.linstab-partial-{gone.pid}"
    running = tmp_path / f".out.linstab-partial-{os.getppid()}"
    for d in (stale, running):
        (d / "data").mkdir(parents=True)
    build_report(cfg, ("jacobian",), nets=nets[:1])
    assert not stale.exists() and running.is_dir()
    with pytest.raises(ValueError, match="is a file"):
        build_report(replace(cfg, out=small), ("jacobian",), nets=nets[:1])


def test_the_jacobian_section_tests_unrecognized_units_as_they_are(tmp_path):
    """Units linstab does not recognize cannot get softplus (their ReLUs are not swapped): they
    are tested as they are, and a smooth one (tanh) gives the order of the finding."""
    from factories import TanhUnit

    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), TanhUnit(), TanhUnit(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))  # fmt: skip
    net = linstab.Network(model.eval(), input_shape=(3, 8, 8), unit_types=(TanhUnit,), name="tanh")
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s) for s in range(2)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), out=tmp_path / "out", use_cache=False, progress=False)
    index = build_report(cfg, ("jacobian",), nets=[net])
    rows = list(csv.DictReader((index.parent / "data" / "jacobian_tests.csv").open()))
    assert rows and {(r["tested"], r["activation"]) for r in rows} == {("as-is", "as-is (tanh)")}
    assert all(r["piecewise_linear"] == "False" and float(r["order"]) > 1.9 for r in rows), rows
    (finding,) = read_findings(index.parent / "data" / "findings.csv")
    assert finding["verdict"] == "reproduced" and finding["value"] != "", finding


def test_labels_beyond_the_models_outputs_are_refused_before_any_work(tmp_path, monkeypatch):
    """A 2-class model with 10-class labels failed a minute in, when the attacks started."""
    import linstab.report.build as build

    net = make_net("option-B", seed=0)
    images = tmp_path / "lab.npz"
    np.savez(images, images=torch.stack([tiny_image(s) for s in range(2)]).numpy(), labels=np.array([1, 12]))

    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(build, "_build", reached)
    cfg = ReportConfig(models=[], images=str(images), quick=True, out=tmp_path / "out",
                       cache_dir=tmp_path / "c", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"class indices in 0\.\.9 .* got values in 1\.\.12"):
        build_report(cfg, nets=[net])
    with pytest.raises(Reached):
        build_report(cfg, ("spectra",), nets=[net])  # no attacks: the labels are not used
