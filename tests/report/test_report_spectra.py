"""The report's spectra section: findings per model, whole-spectrum findings, estimates above
``exact_max``, the model comparison and the shortcut reference."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image
from report_checks import check_findings

import linstab
from linstab.io.tables import read_csv as read_findings_rows
from linstab.report import ReportConfig, build_report
from linstab.report.findings import read_findings


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_stage_plateau_finding_needs_whole_stage_spectra(tmp_path, quick):
    """Quick mode has only top-k stage values: the plateau is not judged from them."""
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s, hw=16) for s in range(2)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), quick=quick, out=tmp_path / "out",
                       cache_dir=tmp_path / "c", progress=False)  # fmt: skip
    index = build_report(cfg, ("spectra",), nets=[make_net("option-A", seed=2, hw=16)])
    rows = read_findings(index.parent / "data" / "findings.csv")
    stage = [r for r in rows if r["claim"].startswith("The stage Jacobians")]
    assert len(stage) == 1
    if quick:
        assert "plateau not assessed" in stage[0]["measured"] and stage[0]["verdict"] != "reproduced"
    else:
        assert "plateau share" in stage[0]["measured"] and "not assessed" not in stage[0]["measured"]


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
    nets = [make_net("option-A", seed=1, hw=16), make_net("option-B", seed=2, hw=16)]
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s, hw=16) for s in range(3)]).numpy())
    cfg = ReportConfig(
        models=[], images=str(small), quick=True, out=tmp_path / "out", cache_dir=tmp_path / "c"
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
    assert "Ablations left out: unit 3.2 has 64 values" in index2.read_text()
    (f,) = read_findings(index2.parent / "data" / "findings.csv")
    assert f["verdict"] == "not testable" and "raise --exact-max" in f["why"], f
    with pytest.raises(ValueError, match="exact_max"):
        replace(cfg, exact_max=0)


def test_quick_leaves_out_ablations_of_a_unit_above_its_band_count_limit(tmp_path, monkeypatch):
    """Quick mode counts bands only up to 2 * QUICK_EXACT_MAX values; an ablation unit above that
    (a shallow network whose only regular unit is in stage 1) is left out with the reason, and the
    image-dependence finding says why it is not testable, instead of exact spectra per variant."""
    import linstab.report.context as C

    monkeypatch.setattr(C, "QUICK_EXACT_MAX", 16)  # limit 32 values; the ablation unit 3.2 has 64
    net = make_net("option-B", seed=2)
    small = tmp_path / "images.npy"
    np.save(small, torch.stack([tiny_image(s) for s in range(3)]).numpy())
    cfg = ReportConfig(models=[], images=str(small), quick=True, out=tmp_path / "out",
                       cache_dir=tmp_path / "c", progress=False, workers=1)  # fmt: skip
    assert cfg.whole_spectrum_max == 32 and replace(cfg, quick=False).whole_spectrum_max == cfg.exact_max
    index = build_report(cfg, ("ablations",), nets=[net])
    assert "Ablations left out: unit 3.2 has 64 values, more than the 32" in index.read_text()
    (f,) = read_findings(index.parent / "data" / "findings.csv")
    assert f["verdict"] == "not testable" and "run without --quick" in f["why"], f
    assert not list((index.parent / "figures").rglob("figure5*"))


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
