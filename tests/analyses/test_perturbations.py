"""Propagated perturbations, linear predictions / eq. (1), summaries, CSV, CLI and figures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from factories import make_net, tiny_image

from linstab.analyses import perturbations as P
from linstab.analyses import projections as proj
from linstab.analyses import propagation as pg
from linstab.analyses.attacks import AttackResult

FAST_ATTACKS = {
    "pgd": {"steps": 10, "rtol": 0.05},
    "cw": {"steps": 50, "binary_search_steps": 3, "initial_const": 1.0},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


@pytest.fixture(scope="module")
def net():
    return make_net("option-A")


@pytest.fixture(scope="module")
def images():
    return torch.stack([tiny_image(s) for s in range(4)])


# ---- random perturbation ----------------------------------------------------------------------
@pytest.mark.parametrize("norm", [1e-6, 0.3, 2.0])
def test_random_perturbation_has_exactly_the_norm(norm):
    x = tiny_image(1)
    d = pg.random_perturbation(x, norm, seed=5)
    assert d.dtype == torch.float64 and d.shape == x.shape
    assert float(d.norm()) == pytest.approx(norm, rel=1e-12)
    y = x.double() + d
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(d, pg.random_perturbation(x, norm, seed=5))
    assert not torch.equal(d, pg.random_perturbation(x, norm, seed=6))


def test_random_perturbation_with_heavy_clipping_and_errors():
    x = torch.full((3, 8, 8), 0.999)
    x[0] = 0.001
    d = pg.random_perturbation(x, 5.0, seed=0)
    assert float(d.norm()) == pytest.approx(5.0, rel=1e-12)
    y = x.double() + d
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ValueError, match="larger than the image box"):
        pg.random_perturbation(x, 100.0)
    with pytest.raises(ValueError, match="norm: expected a finite float > 0"):
        pg.random_perturbation(x, -1.0)
    with pytest.raises(ValueError, match="one image"):
        pg.random_perturbation(torch.stack([x, x]), 1.0)


# ---- propagation --------------------------------------------------------------------------------
def test_propagation_equals_independent_activations(net, images):
    g = torch.Generator().manual_seed(0)
    pert = (images + 0.05 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    prop = pg.propagate(net, images, pert, dtype=torch.float64, keep=True)
    s_c, outs_c, _ = net.activations(images, dtype=torch.float64)
    s_p, outs_p, _ = net.activations(pert, dtype=torch.float64)
    maps_c, maps_p = [s_c, *outs_c], [s_p, *outs_p]
    assert prop.addresses == ["stem", *[u.address for u in net.units]]
    for k in range(len(maps_c)):
        ref = (maps_p[k] - maps_c[k]).flatten(1).norm(dim=1)
        torch.testing.assert_close(prop.norms[:, k], ref, rtol=1e-12, atol=0)
        n = maps_c[k][0].numel()
        assert prop.numel[k] == n
        torch.testing.assert_close(prop.normalized[:, k], ref / math.sqrt(n), rtol=1e-12, atol=0)
    # growth: ratio to the previous layer; the stem's to the input perturbation
    torch.testing.assert_close(prop.growth[:, 1:], prop.norms[:, 1:] / prop.norms[:, :-1])
    inp = (pert.double() - images.double()).flatten(1).norm(dim=1)
    torch.testing.assert_close(prop.growth[:, 0], prop.norms[:, 0] / inp)
    # the perturbation entering unit k+1 is the one leaving unit k (chained units)
    for k in range(1, len(net.units)):
        torch.testing.assert_close(prop.in_diffs[k], maps_p[k] - maps_c[k], rtol=0, atol=0)


def test_propagate_errors(net, images):
    with pytest.raises(ValueError, match="expected shape"):
        pg.propagate(net, images, images[:2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pg.propagate(net, images, images + 2)
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        pg.propagate(net, images, images, dtype=torch.float16)


@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-basic", "akamaster"])
def test_tiny_perturbation_linear_prediction_is_exact(kind):
    net = make_net(kind)
    x = torch.stack([tiny_image(7), tiny_image(8)])
    res = P.analyze(net, x, None, "random", random_norm=1e-6, spectral_units=None, progress=False)
    units = [r for r in res.rows if r["address"] != "stem"]
    assert len(units) == 2 * len(net.units)
    for r in units:
        assert r["lin_rel_err"] < 1e-4, (kind, r["address"], r["lin_rel_err"])
        assert r["pert_l2"] == pytest.approx(1e-6, rel=1e-9)


# ---- eq. (1) ----------------------------------------------------------------------------------
def test_predict_unit_refuses_a_perturbation_of_another_size_or_kind(net, images):
    op = net.linearize(images[0], torch.float64).unit(1, 1)
    with pytest.raises(ValueError, match="input shape"):
        proj.predict_unit(op, torch.zeros(3, 2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        proj.predict_unit(op, torch.zeros(op.in_shape, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        proj.predict_unit(op, [0.0])
    flat = torch.ones(op.in_shape, dtype=torch.float64).reshape(-1)  # any layout of the entries
    assert proj.predict_unit(op, flat).in_norm == pytest.approx(flat.numel() ** 0.5)


def test_predict_unit_refuses_singular_vectors_of_another_unit(net, images):
    lin = net.linearize(images[0], torch.float64)
    same = [u for u in net.units if u.stage == 1][:2]  # two units of one shape
    op_a, op_b = (lin.unit(u.stage, u.index) for u in same)
    assert op_a.shape == op_b.shape
    spec_a = proj.right_singular(op_a, None)
    dx = torch.randn(op_a.in_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="do not belong to this unit"):
        proj.predict_unit(op_b, dx, spec_a)
    # the same unit rebuilt (another operator object, float32 too) is accepted
    again = net.linearize(images[0], torch.float32).unit(same[0].stage, same[0].index)
    p = proj.predict_unit(again, dx, spec_a)
    assert p.eq1 == pytest.approx(float((op_a @ dx).norm()), rel=1e-4)
    other = [u for u in net.units if math.prod(lin.unit(u.stage, u.index).in_shape) != op_a.shape[1]][0]
    op_c = lin.unit(other.stage, other.index)
    dxc = torch.zeros(op_c.in_shape, dtype=torch.float64)
    with pytest.raises(ValueError, match="V of shape"):
        proj.predict_unit(op_c, dxc, spec_a)
    with pytest.raises(TypeError, match="RightSingular"):
        proj.predict_unit(op_a, dx, spec_a.values)


def test_eq1_with_all_vectors_equals_linear_prediction(net, images):
    lin = net.linearize(images[0], torch.float64)
    g = torch.Generator().manual_seed(2)
    for u in net.units:
        op = lin.unit(u.stage, u.index)
        spec = proj.right_singular(op, None)
        assert spec.complete and spec.method == "exact"
        dx = torch.randn(op.in_shape, generator=g, dtype=torch.float64)
        p = proj.predict_unit(op, dx, spec)
        jdx = float((op @ dx).norm())
        assert p.lin_pred == pytest.approx(jdx, rel=1e-12)
        assert p.eq1 == pytest.approx(jdx, rel=1e-10)
        assert p.eq1_upper == pytest.approx(jdx, rel=1e-10)
        # at down-sampling units V spans only the row space; the rest is the null space
        assert p.captured <= 1 + 1e-12
        assert p.alpha.numel() == min(op.shape)


def test_topk_bounds_contain_linear_prediction(net, images):
    lin = net.linearize(images[1], torch.float64)
    g = torch.Generator().manual_seed(3)
    u = net.units[-1]
    op = lin.unit(u.stage, u.index)
    exact = proj.right_singular(op, None)
    top = proj.right_singular(op, 12)
    assert top.method == "topk" and not top.complete
    torch.testing.assert_close(top.values, exact.values[:12], rtol=1e-6, atol=0)
    assert top.tail_bound == pytest.approx(float(exact.values[11]), rel=1e-6)
    for _ in range(3):
        dx = torch.randn(op.in_shape, generator=g, dtype=torch.float64)
        p = proj.predict_unit(op, dx, top)
        assert p.eq1 <= p.lin_pred * (1 + 1e-9)
        assert p.lin_pred <= p.eq1_upper * (1 + 1e-6)
        pe = proj.predict_unit(op, dx, exact)
        assert p.align10 == pytest.approx(pe.align10, rel=1e-5)


def test_broken_solver_falls_back_with_a_warning(net, images, monkeypatch):
    lin = net.linearize(images[2], torch.float64)
    op = lin.unit(3, 1)  # down-sampling: n_out < n_in
    exact = proj.right_singular(op, None)

    def garbage(op, k, *, seed=0):
        m = k or min(op.shape)
        return (
            torch.linspace(20, 1, m, dtype=torch.float64),
            torch.eye(op.shape[1], m, dtype=torch.float64),
            False,
        )

    monkeypatch.setattr(proj, "_right_singular", garbage)
    with pytest.warns(RuntimeWarning, match="failed the check"):
        top = proj.right_singular(op, 12)
    assert top.method == "topk-fallback"
    torch.testing.assert_close(top.values, exact.values[:12], rtol=1e-8, atol=0)
    with pytest.warns(RuntimeWarning, match="failed the check"):
        allv = proj.right_singular(op, None)
    assert allv.method == "exact-fallback" and allv.complete
    torch.testing.assert_close(allv.values, exact.values, rtol=1e-10, atol=1e-12)


# ---- analysis, summary, CSV ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def analysis(net, images):
    y = net.predict(images).argmax(1)
    return P.analyze(
        net,
        images,
        y,
        "fgsm,pgd,random",
        ids=[f"img{i}" for i in range(4)],
        k=12,
        spectral_units="last",
        keep_alphas="3.2",
        attack_params={"pgd": FAST_ATTACKS["pgd"]},
        progress=False,
    )


def test_analysis_rows_and_summary(analysis, net, tmp_path):
    rows = analysis.rows
    assert set(P.ROW_FIELDS) == set(rows[0])
    names = [r["perturbation"] for r in rows]
    assert names.index("fgsm") < names.index("pgd") < names.index("random")
    # random copies the FGSM norm of the same image
    fg = {r["image"]: r["pert_l2"] for r in rows if r["perturbation"] == "fgsm" and r["position"] == 0}
    rd = {r["image"]: r["pert_l2"] for r in rows if r["perturbation"] == "random" and r["position"] == 0}
    assert rd and set(rd) == set(fg)
    for im in rd:
        assert rd[im] == pytest.approx(fg[im], rel=1e-6)
    for r in rows:
        if r["perturbation"] != "random" and r["address"] == "stem":
            assert r["flipped"]
        if r["stage"] == len(net.stages):
            assert r["n_vectors"] == 12 and r["spectrum"].startswith("topk")
            assert 0 <= r["align10"] <= r["captured"] <= 1 + 1e-9
            assert r["eq1"] <= r["lin_pred"] * (1 + 1e-9) <= r["eq1_upper"] * (1 + 1e-6)
        elif r["address"] != "stem":
            assert math.isnan(r["eq1"]) and not math.isnan(r["lin_pred"])
    assert any(k[2] == "3.2" for k in analysis.alphas)
    summ = analysis.summary()
    assert [s["perturbation"] for s in summ] == ["fgsm", "pgd", "random"]
    for s in summ:
        for key in (
            "growth_s1",
            "growth_s2",
            "growth_s3",
            "last3_growth",
            "last3_vs_stage",
            "align10_last_stage",
        ):
            assert math.isfinite(s[key]), key
        assert s["align10_uniform"] == pytest.approx(10 / 64)
    table = P.summary_table(summ)
    assert table.count("\n") == 4 and "last3_vs_stage" in table
    # a perturbation without rows (every image failed or was skipped) keeps its line
    failed = {"cw": [AttackResult.unattacked("cw", 0, torch.zeros(3, 8, 8), 1, 1, "failed", {})]}
    failed["cw"][0].skipped = False
    extra = P.summarize(rows, {**analysis.attacks, **failed})
    assert [e["perturbation"] for e in extra] == ["fgsm", "pgd", "random", "cw"]
    assert extra[-1] == {"perturbation": "cw", "images": 0, "attempted": 1, "success_rate": 0.0}
    P.write_summary(P.summarize([], failed), tmp_path / "empty.csv")
    with pytest.raises(ValueError, match=r"end in \.json or \.csv"):
        P.write_summary(extra, tmp_path / "summary.txt")
    assert not (tmp_path / "summary.txt").exists()
    header = (tmp_path / "empty.csv").read_text().splitlines()[0]
    assert header == "perturbation,images,attempted,success_rate"
    # CSV round trip gives the same summary
    path = analysis.write_csv(tmp_path / "rows.csv")
    back = P.read_rows(path)
    assert len(back) == len(rows)
    s2 = P.summarize(back)
    for a, b in zip(summ, s2, strict=True):
        for key, v in b.items():
            if isinstance(v, float) and math.isfinite(v):
                assert v == pytest.approx(a[key], rel=1e-9), key


def test_unit_specs_and_default_projection_units(net):
    assert pg.resolve_units(net, "all") == [u.address for u in net.units]
    assert pg.resolve_units(net, "last") == ["3.1", "3.2"]
    assert pg.resolve_units(net, "2,3.2") == ["2.1", "2.2", "3.2"]
    assert pg.resolve_units(net, None) == [] == pg.resolve_units(net, "none")
    with pytest.raises(ValueError, match="stage must be in 1..3"):
        pg.resolve_units(net, "4")
    with pytest.raises(ValueError):
        pg.resolve_units(net, "3.9")
    fake = lambda n: SimpleNamespace(stages=[[None] * n] * 3)  # noqa: E731
    assert pg.default_projection_units(fake(9)) == [6, 7, 8, 9]
    assert pg.default_projection_units(fake(18)) == [12, 14, 16, 18]
    assert pg.default_projection_units(fake(3)) == [2, 3]


def test_misclassified_images_are_skipped_for_every_perturbation(net, images):
    y = net.predict(images).argmax(1)
    y[1] = (y[1] + 1) % 10
    res = P.analyze(net, images, y, "fgsm,random", random_norm=0.1, spectral_units=None, progress=False)
    for name in ("fgsm", "random"):
        assert res.attacks[name][1].skipped and "misclassified" in res.attacks[name][1].note
        assert 1 not in {r["image_pos"] for r in res.rows if r["perturbation"] == name}


def test_analyze_errors(net, images):
    with pytest.raises(ValueError, match="unknown perturbation 'jsma'"):
        P.analyze(net, images, None, "jsma", progress=False)
    with pytest.raises(TypeError, match="dtype"):
        P.analyze(net, images, None, "random", dtype=torch.int32, progress=False)
    with pytest.raises(ValueError, match="random_ref"):
        P.analyze(net, images, None, "random", random_ref="random", progress=False)
    with pytest.raises(ValueError, match="attack_params"):
        P.analyze(net, images, None, "fgsm", attack_params={"jsma": {}}, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.analyze(net, images - 1, None, "fgsm", progress=False)
    with pytest.raises(ValueError, match="k: expected a positive int"):
        proj.right_singular(net.linearize(images[0]).unit(1, 1), 0)
    with pytest.raises(ValueError, match="k: expected a positive int"):  # was taken as k=1
        proj.right_singular(net.linearize(images[0]).unit(1, 1), True)


def test_analyze_checks_attack_settings_k_and_units_before_any_attack(net, images, monkeypatch):
    y = net.predict(images).argmax(1)
    ran = []
    monkeypatch.setattr(P, "run_attack", lambda *a, **k: ran.append(a[3]))
    bad = [
        # pgd runs after fgsm: its radius is refused before fgsm has started
        (dict(attack_params={"pgd": {"eps": -0.1}}), ValueError, r"eps: expected a float in \(0, 1\]"),
        (dict(attack_params={"pgd": {"epsilon": 0.1}}), TypeError, "unknown parameter"),
        # settings of an attack that is not run are still checked: they were asked for
        (dict(attack_params={"cw": {"steps": 0}}), ValueError, "steps"),
        # the top-k of every spectral unit must exist: 3.x units have min(n_out, n_in) = 64
        (dict(k=65, spectral_units="last"), ValueError, r"k: expected an int in 1\.\.64 or None.*unit 3\.1"),
        (dict(k=10**6), ValueError, r"k: expected an int in 1\.\.64"),
        (dict(k=2.5), TypeError, "k must be"),
        (dict(spectral_units=""), ValueError, "spectral_units: expected all, last.*empty list ''"),
        (dict(spectral_units=" , "), ValueError, "empty list"),
        (dict(spectral_units=[]), ValueError, "empty list"),
        (dict(spectral_units="9"), ValueError, "spectral_units: stage must be in 1..3"),
        (dict(keep_alphas=""), ValueError, "keep_alphas"),
        (dict(random_norm=float("inf")), ValueError, "random_norm: expected a finite float"),
        (dict(seed=2**60), ValueError, "seed"),
        (dict(seed=True), TypeError, "seed"),
    ]
    for kw, exc, match in bad:
        with pytest.raises(exc, match=match):
            P.analyze(net, images, y, "fgsm,pgd,random", progress=False, **kw)
    with pytest.raises(ValueError, match="random:N"):
        P.analyze(net, images, y, ["random:3"], random_norm=0.1, seed=2**40 - 2, progress=False)
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0\.\.9"):
        P.analyze(net, images, y + 10, "fgsm", progress=False)
    assert ran == []  # every refusal came before the first attack
    # the largest k that exists is accepted (the units' full spectrum), and "none" needs no k check
    res = P.analyze(
        net, images[:1], y[:1], "random", random_norm=0.1, k=64, spectral_units="3.2", progress=False
    )
    assert {r["n_vectors"] for r in res.rows if r["address"] == "3.2"} == {64}
    P.analyze(
        net, images[:1], y[:1], "random", random_norm=0.1, k=10**6, spectral_units="none", progress=False
    )


def test_every_image_misclassified_gives_skipped_results_and_no_rows(net, images):
    y = (net.predict(images).argmax(1) + 1) % 10
    res = P.analyze(net, images, y, "fgsm,random", spectral_units=None, progress=False)
    assert res.rows == []
    for name in ("fgsm", "random"):
        assert all(r.skipped and "misclassified" in r.note for r in res.attacks[name])


# ---- CLI and figures ---------------------------------------------------------------------------


@pytest.mark.slow
def test_resnet20_fgsm_deepfool_random(shared_weights):
    import linstab

    net = linstab.load_model("resnet20-akamaster")
    x, y = linstab.default_images([0, 1])
    res = P.analyze(net, x, y, "fgsm,deepfool,random", k=16, spectral_units="last", progress=False)
    summ = {s["perturbation"]: s for s in res.summary()}
    assert set(summ) == {"fgsm", "deepfool", "random"}
    for r in res.rows:
        assert math.isfinite(r["normalized"]) and r["norm"] > 0
        if r["perturbation"] != "random":
            assert r["flipped"]
        if r["stage"] == 3:
            assert r["eq1"] <= r["lin_pred"] * (1 + 1e-6) <= r["eq1_upper"] * (1 + 1e-4)
    # random perturbations of the FGSM size stay in the linear regime much better
    assert summ["random"]["lin_rel_err"] < summ["fgsm"]["lin_rel_err"]


# ---- per-image statistics of the report ----------------------------------------------------------------
def _synthetic_rows(name, image, growth, kinds, align=None, flipped=True):
    """Rows of one image and perturbation: the stem, then units (stage, index) with given growth."""
    common = {"image": image, "perturbation": name, "flipped": flipped, "eps": 0.01, "pert_l2": 0.5,
              "pert_linf": 0.01, "numel": 16}  # fmt: skip
    stem = {"address": "stem", "stage": 0, "index": 0, "kind": "stem", "growth": 1.0, "align10": math.nan,
            "lin_rel_err": math.nan, "in_norm": 1.0, "norm": 1.0, "normalized": 1.0}  # fmt: skip
    out = [{**common, **stem}]
    norm = 1.0
    for (stage, index), g, kind in zip(growth.keys(), growth.values(), kinds, strict=True):
        out.append(
            {
                **common,
                "address": f"{stage}.{index}",
                "stage": stage,
                "index": index,
                "kind": kind,
                "growth": g,
                "normalized": norm * g,
                "align10": (align or {}).get((stage, index), math.nan),
                "lin_rel_err": 0.01,
                "in_norm": norm,
                "norm": norm * g,
            }
        )
        norm *= g
    return out


def test_per_image_statistics_exclude_downsampling_units_from_the_stage_mean():
    units = [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (2, 6)]
    kinds = ["regular", "regular", "downsampling", "regular", "regular", "regular", "regular", "regular"]
    growth = dict(zip(units, [1.2, 0.9, 0.6, 1.0, 1.0, 1.5, 1.5, 1.5], strict=True))
    align = {(2, 4): 0.01, (2, 5): 0.02, (2, 6): 0.2}
    rows = _synthetic_rows("fgsm", "0", growth, kinds, align) + _synthetic_rows(
        "random:1", "0", growth, kinds
    )
    stats = P.per_image_statistics(rows, last_units=3)
    assert [s["perturbation"] for s in stats] == ["fgsm", "random:1"]
    s = stats[0]
    # the last 3 units (2.4-2.6) against the regular units before them (2.2, 2.3); 2.1 left out
    assert s["n_baseline"] == 2 and s["last3_growth"] == pytest.approx(1.5)
    assert s["baseline_growth"] == pytest.approx(1.0) and s["jump"] == pytest.approx(math.log(1.5))
    assert s["growth_early"] == pytest.approx(math.sqrt(1.2 * 0.9)) and s["frac_growing_early"] == 0.5
    assert s["growth_last"] == pytest.approx(1.5 ** (3 / 5))
    assert s["align10_final"] == 0.2 and s["align10_earlier"] == pytest.approx(0.015)
    assert s["lin_rel_err_last"] == pytest.approx(0.01)
    # the naive "no change" prediction is off by |1 - g| / g at each unit
    naive = sorted(abs(1 - g) / g for g in (0.6, 1.0, 1.0, 1.5, 1.5, 1.5))
    assert s["naive_rel_err_last"] == pytest.approx(0.5 * (naive[2] + naive[3]))
    # the summary's stage mean without the down-sampling unit
    summ = P.summarize(rows)
    assert summ[0]["last3_vs_regular"] == pytest.approx(1.5)
    assert summ[0]["last3_vs_stage"] < summ[0]["last3_vs_regular"]


def test_random_repeats_and_controls_are_perturbation_names(net, images):
    assert pg.parse_perturbations("fgsm,random,random:2,fgsm-half,bim") == [
        "fgsm", "random", "random:2", "fgsm-half", "bim"]  # fmt: skip
    assert pg.parse_perturbations("all") == list(pg.PERTURBATIONS)
    assert pg.random_repeat("random") == 0 and pg.random_repeat("random:3") == 3
    assert pg.random_repeat("random:0") is None and pg.random_repeat("fgsm") is None
    with pytest.raises(ValueError, match="random:N"):
        pg.parse_perturbations("random:x")
    y = net.predict(images).argmax(1)
    res = P.analyze(
        net, images, y, "fgsm,random,random:1,fgsm-half", k=4, spectral_units="none", progress=False
    )
    by = {(r["perturbation"], r["image"]): r for r in res.rows if r["address"] == "stem"}
    for (name, image), r in by.items():
        if name.startswith("random"):
            assert r["pert_l2"] == pytest.approx(by[("fgsm", image)]["pert_l2"], rel=1e-6)
        if name == "fgsm-half":
            assert not r["flipped"]
    d0 = [a.delta for a in res.attacks["random"] if a.success]
    d1 = [a.delta for a in res.attacks["random:1"] if a.success]
    assert d0 and not any(torch.equal(a, b) for a, b in zip(d0, d1, strict=True))


def test_random_perturbation_norm_accepts_numpy_scalars_and_refuses_bools():
    import numpy as np

    x = tiny_image(1)
    d = pg.random_perturbation(x, np.float32(0.5), seed=3)
    assert float(d.norm()) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError, match="norm: expected a finite float > 0, got True"):
        pg.random_perturbation(x, True)


def test_a_random_norm_the_box_cannot_hold_is_refused_before_any_attack(net, images, monkeypatch):
    y = net.predict(images).argmax(1)

    def no_attack(*a, **k):
        raise AssertionError("an attack ran before random_norm was checked")

    monkeypatch.setattr(P, "run_attack", no_attack)
    with pytest.raises(
        ValueError, match=r"random_norm: too large for image 0 \(random\).*larger than the image box"
    ):
        P.analyze(net, images, y, "fgsm,random", random_norm=100.0, progress=False)


def test_a_reference_norm_the_box_cannot_hold_is_reported_not_a_crash(net, images):
    y = net.predict(images).argmax(1)
    res = P._random_results(images, y, {0: 100.0, 1: 0.5}, 0, net)
    assert not res[0].success and "no random perturbation of the reference norm" in res[0].note
    assert res[1].success and res[1].l2 == pytest.approx(0.5, rel=1e-12)


def test_geometric_mean_of_growths_counts_a_vanished_perturbation():
    """A unit that kills the perturbation (growth 0) makes the geometric mean 0; undefined
    growths after it (0/0: NaN) are left out; before, zeros were skipped like NaN."""
    from linstab.analyses.perturbations import _gmean

    assert _gmean([2.0, 0.5, 4.0]) == pytest.approx(math.exp(math.log(4.0) / 3))
    assert _gmean([2.0, 0.0, math.nan]) == 0.0
    assert math.isnan(_gmean([math.nan, math.inf]))
