"""Every finding of the report has a statistic, an interval, a rule and a verdict: the full
pipeline on a tiny network (fast) and on ResNet-20 with 3 images (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image
from report_checks import CHROMIUM, check_findings, images_loaded

from linstab.report import ReportConfig, build_report
from linstab.report.findings import read_findings


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


@pytest.fixture(scope="module")
def resnet20_report(shared_weights, tmp_path_factory):
    """The quick report of every section on ResNet-20, 3 images, FGSM and PGD, 2 seeds (about
    2.5 minutes on one thread): built once for the tests below."""
    tmp = tmp_path_factory.mktemp("resnet20")
    cfg = ReportConfig(
        models=["resnet20-akamaster"],
        images=[0, 1, 2],
        quick=True,
        attacks=("fgsm", "pgd"),
        out=tmp / "out",
        cache_dir=tmp / "cache",
        progress=False,
        seeds=2,
    )
    return build_report(cfg), tmp


@pytest.mark.slow
def test_full_quick_report_resnet20(resnet20_report):
    """Every figure is on the page; quick mode's limits are said; the page loads in Chromium."""
    index, tmp = resnet20_report
    page = index.read_text()
    for key in (
        "figure1_scree",
        "figure2_bands",
        "figure3_propagation_fgsm",
        "figure3_propagation_pgd",
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
        n, total = (int(v) for v in images_loaded(index, tmp).split("/"))
        assert n == total


@pytest.mark.slow
def test_every_finding_has_a_statistic_an_interval_a_rule_and_a_verdict(resnet20_report):
    """Every section on ResNet-20 with 3 images (quick: whole-spectrum findings say not testable)."""
    index, _ = resnet20_report
    findings = read_findings(index.parent / "data" / "findings.csv")
    assert len(findings) >= 28
    claims = " ".join(f["claim"] for f in findings)
    for key in ("plateau", "jump", "aligned", "eq. (1)", "alpha", "t = 0.5", "images", "norm"):
        assert key in claims, key
    check_findings(findings)
    # ResNet-20's last stage is too short for the jump: said, not guessed
    jump = [f for f in findings if f["claim"].startswith("Adversarial (fgsm) perturbations jump")]
    assert jump[0]["verdict"] == "not testable" and "3 units" in jump[0]["why"]


def test_a_network_without_down_sampling_units_gets_no_down_sampling_verdict(tmp_path):
    """Stages split by parent module can start with a regular unit: the down-sampling finding
    was "reproduced" on unit 2.1 (regular), a unit the claim is not about."""
    from factories import TVBasicBlock, randomize_bn
    from torch import nn

    import linstab

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Sequential(TVBasicBlock(4, 4), TVBasicBlock(4, 4)),
        nn.Sequential(TVBasicBlock(4, 4), TVBasicBlock(4, 4)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )
    net = linstab.Network(randomize_bn(model, 0).eval(), input_shape=(3, 8, 8), name="flat")
    assert len(net.stages) == 2 and {u.kind for u in net.units} == {"regular"}
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s) for s in range(2)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), out=tmp_path / "out", use_cache=False, progress=False)
    index = build_report(cfg, ("spectra",), nets=[net])
    (f,) = [f for f in read_findings(index.parent / "data" / "findings.csv") if "down-sampling" in f["claim"]]
    assert f["verdict"] == "not testable" and "flat has no down-sampling units" in f["why"], f
