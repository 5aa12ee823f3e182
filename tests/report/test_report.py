"""The one-command report: files, cache reuse, generated text, and a headless-browser check."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image

import linstab
from linstab.io.tables import read_csv as read_findings_rows
from linstab.report import ReportConfig, build_report
from linstab.report.context import FINDING_FIELDS
from linstab.report.findings import read_findings
from linstab.report.rules import VERDICTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def images_loaded(index: Path, tmp: Path) -> str:
    """Open the page offline in headless Chromium; return 'loaded/total' images and screenshot."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chrome-profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    shot = tmp / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1200,3000", f"--screenshot={shot}", index.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's load script did not run"
    return f"{m.group(1)}/{m.group(2)}"


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


@pytest.mark.slow  # 20 s (quick) and 50 s (full) on one thread
@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_stage_plateau_finding_needs_whole_stage_spectra(tmp_path, quick):
    """Quick mode has only top-k stage values: the plateau is not judged from them."""
    cfg = ReportConfig(models=[], images=[0, 1], quick=quick, out=tmp_path / "out", cache_dir=tmp_path / "c",
                       progress=False)  # fmt: skip
    index = build_report(cfg, ("spectra",), nets=[make_net("option-A", seed=2, hw=32)])
    rows = read_findings(index.parent / "data" / "findings.csv")
    stage = [r for r in rows if r["claim"].startswith("The stage Jacobians")]
    assert len(stage) == 1
    if quick:
        assert "plateau not assessed" in stage[0]["measured"] and stage[0]["verdict"] != "reproduced"
    else:
        assert "plateau share" in stage[0]["measured"] and "not assessed" not in stage[0]["measured"]


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


@pytest.mark.slow
def test_full_quick_report_resnet20(shared_weights, tmp_path):
    cfg = ReportConfig(
        models=["resnet20-akamaster"],
        images=[0, 1],
        quick=True,
        attacks=("fgsm",),
        out=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    index = build_report(cfg)
    page = index.read_text()
    for key in (
        "figure1_scree",
        "figure2_bands",
        "figure3_propagation_fgsm",
        "figure4_projections",
        "figure5_ablations",
        "eigenvalues",
        "lyapunov",
    ):
        assert key in page, key
    # quick mode: stage-1 units (16384 values) get no eigenvalues, stages only top-k values
    eig_csv = (index.parent / "data" / "eigenvalues.csv").read_text().splitlines()
    eig_units = [r.split(",")[0] for r in eig_csv[1:]]
    assert eig_units == ["2.3", "3.3"], eig_units
    assert "skipped: 1.3" in page
    findings = (index.parent / "data" / "findings.csv").read_text()
    assert "plateau not assessed (top-64 values only" in findings
    assert "the last stage of resnet20-akamaster has 3 units" in findings  # the jump is not testable
    if CHROMIUM:
        n, total = (int(v) for v in images_loaded(index, tmp_path).split("/"))
        assert n == total


def check_findings(findings: list[dict], allow_single: bool = False) -> None:
    """Every finding has a statistic, a rule and a verdict; a testable one a value and an interval
    (with 2 or more images; ``allow_single``: one image, no interval and never reproduced); a not
    testable one says why.
    """
    for f in findings:
        assert f["verdict"] in VERDICTS and f["rule"] and f["statistic"], f
        if f["verdict"] == "not testable":
            assert f["why"], f  # says why instead of guessing
            continue
        assert math.isfinite(float(f["value"])) and f["images"], f
        if allow_single and f["n_images"] == "1":
            assert f["ci_low"] == "" and f["verdict"] != "reproduced", f
            continue
        low, high = float(f["ci_low"]), float(f["ci_high"])
        assert int(f["n_images"]) >= 2 and math.isfinite(low) and math.isfinite(high) and low <= high, f
        if f["test"]:
            assert 0 <= float(f["p_value"]) <= 1, f


def test_every_finding_of_the_full_pipeline_on_a_tiny_net(tmp_path):
    """Every section, not quick, 6 small images (their labels are the model's predictions)."""
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s) for s in range(6)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), attacks=("fgsm",), out=tmp_path / "out",
                       cache_dir=tmp_path / "c", progress=False, seeds=2)  # fmt: skip
    index = build_report(cfg, nets=[make_net("option-A", seed=2)])
    findings = read_findings(index.parent / "data" / "findings.csv")
    check_findings(findings)
    verdicts = {f["verdict"] for f in findings}
    assert {"reproduced", "not testable"} <= verdicts and len(findings) >= 28
    assert all("images.npy" in f["images"] for f in findings if f["verdict"] != "not testable")


@pytest.mark.slow  # about 2 minutes on one thread
def test_every_finding_has_a_statistic_an_interval_a_rule_and_a_verdict(shared_weights, tmp_path):
    """Every section on ResNet-20 with 3 images (quick: whole-spectrum findings say not testable)."""
    cfg = ReportConfig(
        models=["resnet20-akamaster"],
        images=[0, 1, 2],
        quick=True,
        attacks=("fgsm", "pgd"),
        out=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        progress=False,
        seeds=2,
    )
    index = build_report(cfg)
    findings = read_findings(index.parent / "data" / "findings.csv")
    assert len(findings) >= 28
    claims = " ".join(f["claim"] for f in findings)
    for key in ("plateau", "jump", "aligned", "eq. (1)", "alpha", "t = 0.5", "images", "norm"):
        assert key in claims, key
    check_findings(findings)
    # ResNet-20's last stage is too short for the jump: said, not guessed
    jump = [f for f in findings if f["claim"].startswith("Adversarial (fgsm) perturbations jump")]
    assert jump[0]["verdict"] == "not testable" and "3 units" in jump[0]["why"]


def test_spectra_findings_for_each_of_two_models(tmp_path):
    """Figures 1-2 overlay two models; each model gets its own spectra findings."""
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s) for s in range(3)]).numpy())
    nets = [make_net("option-A", seed=2), make_net("akamaster", seed=3)]
    cfg = ReportConfig(models=[], images=str(small), quick=True, out=tmp_path / "out",
                       cache_dir=tmp_path / "c", progress=False)  # fmt: skip
    out = build_report(cfg, ("spectra",), nets=nets).parent
    findings = read_findings(out / "data" / "findings.csv")
    for net in nets:
        mine = [f for f in findings if f["section"] == f"Spectra ({net.name})"]
        assert len(mine) >= 10, net.name
    check_findings(findings, allow_single=True)  # quick: Figure 2 from one image
    assert {r["model"] for r in read_findings_rows(out / "data" / "figure2_band_summary.csv")} == {
        n.name for n in nets
    }


def test_two_models_get_the_model_comparison_finding(tmp_path):
    """Two networks: their corresponding units' spectra are compared with an architecture change
    (Sec. 3.2, 'no significant difference between ResNet-56 and ResNet-110')."""
    nets = [make_net("option-A", seed=1, hw=32), make_net("option-B", seed=2, hw=32)]
    cfg = ReportConfig(
        models=[], images=[0, 1, 2], quick=True, out=tmp_path / "out", cache_dir=tmp_path / "c"
    )
    cfg.progress = False
    index = build_report(cfg, ("spectra",), nets=nets)
    rows = read_findings(index.parent / "data" / "findings.csv")
    found = [
        r for r in rows if r["claim"].startswith("There is no significant difference between the spectra")
    ]
    assert len(found) == 1 and "option-A and option-B" in found[0]["claim"]
    assert found[0]["verdict"] in ("reproduced", "partly", "not reproduced")
    table = (index.parent / "data" / "model_dependence.csv").read_text().splitlines()
    assert table[0].split(",")[:4] == ["d_model", "d_image", "d_arch", "ratio"] and len(table) == 4


def test_units_above_exact_max_get_estimates_with_intervals(tmp_path):
    """Units with more than ``exact_max`` values get top-k values in Figure 1 and estimated band
    counts whose 95% intervals hold the exact counts; analyses that need whole spectra leave
    them out and say so; smaller units stay exact.
    """
    from linstab import spectra as S
    from linstab.io.tables import read_csv

    net = make_net("option-B", seed=2)  # units of 256, 128 and 64 values
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s) for s in range(2)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), out=tmp_path / "out", cache_dir=tmp_path / "c",
                       progress=False, workers=1, exact_max=100)  # fmt: skip
    index = build_report(cfg, ("spectra", "dynamics"), nets=[net])
    data = index.parent / "data"
    rows = read_csv(data / "figure2_bands.csv")
    big = {"1.1", "1.2", "2.1", "2.2"}
    assert {r["address"] for r in rows} == {u.address for u in net.units}
    imgs = torch.from_numpy(np.load(small))
    for r in rows:
        if r["address"] not in big:
            assert r["route"] != "estimate-slq" and r.get("plateau_lower") in (None, "", "nan"), r
            continue
        assert r["route"] == "estimate-slq", r
        s_, k_ = (int(v) for v in r["address"].split("."))
        i = int(re.search(r"(\d+)\]?$", str(r["image"])).group(1))  # "images.npy[i]"
        exact = S.bands(net.linearize(imgs[i], dtype=torch.float64).unit(s_, k_))
        for b in ("above", "plateau", "below", "zero"):
            assert float(r[f"{b}_lower"]) <= exact.counts[b] <= float(r[f"{b}_upper"]), (r, exact.counts)
    panels = {r["panel"]: r for r in read_csv(data / "figure1_panels.csv")}
    assert panels["unit 1.2"]["fraction_from"].startswith("estimate")
    assert int(float(panels["unit 1.2"]["values_computed"])) < int(float(panels["unit 1.2"]["n"]))
    assert panels["unit 3.2"]["fraction_from"].startswith("exact")
    page = index.read_text()
    assert "ESTIMATES" in page and "skipped: 1.2, 2.2" in page
    # the ablation unit (3.2, 64 values) above the limit: left out with the reason
    cfg2 = replace(cfg, out=tmp_path / "out2", exact_max=32)
    index2 = build_report(cfg2, ("ablations",), nets=[net])
    assert "are left out" in index2.read_text()
    with pytest.raises(ValueError, match="exact_max"):
        replace(cfg, exact_max=0)


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
    cfg = ReportConfig(models=[], images=[0, 1], out=tmp_path / "out", use_cache=False, workers=1)
    cfg.progress = False
    build_report(cfg, ("spectra",), nets=[make_net("option-A", seed=4, hw=32)])
    assert calls and len(calls) == len(set(calls))


def test_shortcut_reference_shows_its_downsampling_units_and_gets_the_finding(tmp_path):
    """A shortcut reference (here option A beside option B) adds its down-sampling units to
    Figure 1 and the down-sampling finding, and nothing else."""
    net, ref = make_net("option-B", seed=2, hw=32), make_net("option-A", seed=3, hw=32)
    ref.name = "ref-option-A"
    cfg = ReportConfig(
        models=[], images=[0, 1], out=tmp_path / "out", cache_dir=tmp_path / "c", progress=False
    )
    index = build_report(cfg, ("spectra",), nets=[net], reference=ref)
    data = index.parent / "data"
    panels = [r for r in read_findings_rows(data / "figure1_panels.csv") if r["model"] == ref.name]
    expected = [f"unit {u.address} (downsampling)" for u in ref.units if u.kind == "downsampling"]
    assert len(expected) >= 2 and [r["panel"] for r in panels] == expected  # first units of stages 2..L
    assert all(float(r["median_fraction_in_[0.99,1.01]"]) >= 0 for r in panels)
    findings = read_findings(data / "findings.csv")
    mine = [f for f in findings if f["section"] == f"Spectra ({ref.name}, shortcut reference)"]
    assert len(mine) == 1 and mine[0]["claim"].startswith("The first (down-sampling) units")
    assert mine[0]["verdict"] in ("reproduced", "partly", "not reproduced")
    main = [f for f in findings if f["claim"] == mine[0]["claim"] and f is not mine[0]]
    assert len(main) == 1 and main[0]["section"] == "Spectra"
    env = json.loads((index.parent / "environment.json").read_text())
    assert env["shortcut_reference"]["name"] == ref.name
    assert env["models_names"] == [net.name]
    assert "subsample-pad shortcuts" in index.read_text()
    arrays = np.load(data / "figure1_spectra.npz")
    assert any(k.startswith(f"{ref.name}|downsampling|unit 2.1") for k in arrays.files)


def test_shortcut_reference_refuses_bad_references_before_any_work(tmp_path, shared_weights):
    from linstab.report.build import shortcut_reference

    net = make_net("option-B", seed=2)
    cfg = ReportConfig(models=[], images=[0], out=tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="one of the report's models"):
        shortcut_reference(cfg, [net], reference=net)
    big = linstab.load_model("resnet20-akamaster")  # 32 x 32 images, the tiny net 8 x 8
    with pytest.raises(ValueError, match="images of different sizes"):
        shortcut_reference(cfg, [net], reference=big)
    assert shortcut_reference(replace(cfg, shortcut_reference=None), [net]) == (None, "")
    assert shortcut_reference(cfg, [net]) == (None, "")  # auto: not a registered option-B network
    with pytest.raises(ValueError, match="unknown model"):
        shortcut_reference(replace(cfg, shortcut_reference="resnet57-nope"), [net])
    with pytest.raises(TypeError, match="shortcut_reference"):
        replace(cfg, shortcut_reference="")


def test_shortcut_reference_auto(tmp_path, shared_weights, monkeypatch):
    """auto: the option-A ResNet-56 beside registered option-B networks when its weights are
    here; a note, not an error, when they are not; nothing beside option-A networks."""
    from linstab.models import SHORTCUT_REFERENCE
    from linstab.report.build import shortcut_reference

    cfg = ReportConfig(models=[], images=[0], out=tmp_path / "out", progress=False)
    b = linstab.load_model("resnet20-linstab")
    ref, note = shortcut_reference(cfg, [b])
    assert ref.name == SHORTCUT_REFERENCE and note == ""
    assert {u.shortcut for u in ref.units if u.kind == "downsampling"} == {"subsample-pad"}
    assert shortcut_reference(cfg, [linstab.load_model("resnet20-akamaster")]) == (None, "")
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LINSTAB_CACHE_DIR", str(tmp_path / "cache"))
    ref, note = shortcut_reference(cfg, [b])
    assert ref is None and "left out" in note and "resnet56" in note


def test_report_cli_shortcut_reference_flags():
    from linstab.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["report"]).shortcut_reference == "auto"
    assert p.parse_args(["report", "--shortcut-reference", "resnet20-akamaster"]).shortcut_reference == (
        "resnet20-akamaster"
    )
    assert p.parse_args(["report", "--no-shortcut-reference"]).no_shortcut_reference


def test_report_cache_tells_same_named_networks_apart(tmp_path):
    """Two networks of one name (a user's model before and after fine-tuning) share a cache
    folder without reading each other's results."""
    a, b = make_net("option-B", seed=2, hw=32), make_net("option-B", seed=5, hw=32)
    assert a.name == b.name
    cfg = ReportConfig(
        models=[], images=[0], quick=True, out=tmp_path / "a", cache_dir=tmp_path / "c", progress=False
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
    np.save(small, torch.stack([tiny_image(s, hw=32) for s in range(3)]).numpy())
    out = {}
    names = ("jacobian_tests.csv", "propagation.csv", "eigenvalues.csv", "lyapunov_stages.csv")
    for workers in (1, 2):
        cfg = ReportConfig(models=[], images=str(small), attacks=("fgsm",), out=tmp_path / f"o{workers}",
                           cache_dir=tmp_path / f"c{workers}", progress=False, seeds=2, quick=True,
                           workers=workers)  # fmt: skip
        index = build_report(
            cfg,
            ("jacobian", "spectra", "propagation", "dynamics"),
            nets=[make_net("option-A", seed=2, hw=32)],
        )
        env = json.loads((index.parent / "environment.json").read_text())
        tables = []
        for name in names:
            with open(index.parent / "data" / name, newline="") as f:
                tables.append(list(csv.reader(f)))
        out[workers] = (env["cache"], tables)
    assert out[1][0] == out[2][0] and out[2][0]["hits"] == 0 and out[2][0]["misses"] > 0
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
