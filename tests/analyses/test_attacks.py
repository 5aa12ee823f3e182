"""Attacks: verified label flips, minimal-eps search, bounds, determinism, user errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from factories import make_net, tiny_image

from linstab.analyses import attacks
from linstab.analyses.attacks import check_eps_grid, default_eps_grid

# a short grid and cheap PGD settings keep the fast tier fast
GRID = torch.from_numpy(np.geomspace(1e-3, 0.5, 16))
FAST_PGD = {"steps": 10, "eps_grid": GRID, "rtol": 0.05}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


@pytest.fixture(scope="module")
def net():
    return make_net("option-A")


@pytest.fixture(scope="module")
def batch(net):
    x = torch.stack([tiny_image(s) for s in range(6)])
    y = net.predict(x).argmax(1)
    return x, y


def _fgsm_direction(net, x, y):
    """Independent recomputation of the FGSM direction sign(grad CE)."""
    xi = x.clone().requires_grad_(True)
    loss = F.cross_entropy(net.module(xi), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xi)
    return g.sign()


def test_fgsm_flips_minimal_grid_eps_and_bounds(net, batch):
    x, y = batch
    rtol = 1e-3
    res = attacks.fgsm(net, x, y, eps_grid=GRID, rtol=rtol)
    assert len(res) == x.shape[0]
    direction = _fgsm_direction(net, x, y)
    ok = [r for r in res if r.success]
    assert len(ok) >= 3
    for r in ok:
        i = r.index
        # label flips (independently re-checked) and the image stays in [0, 1]
        assert int(net.predict(r.x_adv).argmax(1)) != int(y[i])
        assert r.flipped and r.adv_pred != r.label
        assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
        assert torch.allclose(r.x_adv, (x[i] + r.eps * direction[i]).clamp(0, 1))
        assert r.linf <= r.eps + 1e-7
        assert r.l2 == pytest.approx(float((r.x_adv - x[i]).double().norm()), rel=1e-6)
        # minimal grid eps: no smaller grid value flips; the bracket is within the tolerance
        j = r.params["grid_index"]
        assert r.params["grid_eps"] == pytest.approx(float(GRID[j]))
        for e in GRID[:j]:
            xa = (x[i] + float(e) * direction[i]).clamp(0, 1)
            assert int(net.predict(xa).argmax(1)) == int(y[i])
        lo = r.params["eps_lo"]
        assert (float(GRID[j - 1]) if j > 0 else 0.0) <= lo < r.eps <= float(GRID[j])
        assert r.eps - lo <= rtol * r.eps
        x_lo = (x[i] + lo * direction[i]).clamp(0, 1)
        assert int(net.predict(x_lo).argmax(1)) == int(y[i])


def test_fgsm_fixed_eps_and_failure_reported(net, batch):
    x, y = batch
    res = attacks.fgsm(net, x, y, eps=1e-6)
    for r in res:
        assert r.eps == 1e-6
        if not r.success:
            assert r.note
    # a grid too small to flip anything: success=False with a reason, never an exception
    res = attacks.fgsm(net, x, y, eps_grid=[1e-6, 2e-6])
    assert not any(r.success for r in res)
    assert all("flips" in r.note for r in res)


def test_misclassified_image_is_skipped(net, batch):
    x, y = batch
    wrong = y.clone()
    wrong[0] = (wrong[0] + 1) % 10
    res = attacks.fgsm(net, x[:2], wrong[:2], eps_grid=GRID)
    assert res[0].skipped and not res[0].success and "misclassified" in res[0].note
    assert float(res[0].delta.abs().max()) == 0
    assert not res[1].skipped


def test_pgd_minimal_eps_flips_in_bounds_and_deterministic(net, batch):
    x, y = batch
    res = attacks.pgd(net, x[:4], y[:4], seed=3, **FAST_PGD)
    ok = [r for r in res if r.success]
    assert ok
    for r in ok:
        assert int(net.predict(r.x_adv).argmax(1)) != int(y[r.index])
        assert r.linf <= r.eps + 1e-6
        assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
        j = r.params["grid_index"]
        assert r.eps <= float(GRID[j]) + 1e-12
        assert r.eps - r.params["eps_lo"] <= 0.05 * r.eps
    again = attacks.pgd(net, x[:4], y[:4], seed=3, **FAST_PGD)
    for a, b in zip(res, again, strict=True):
        assert torch.equal(a.x_adv, b.x_adv)


def test_pgd_fixed_eps(net, batch):
    x, y = batch
    res = attacks.pgd(net, x[:3], y[:3], eps=0.2, steps=10)
    for r in res:
        assert r.eps == 0.2
        assert r.linf <= 0.2 + 1e-6
        assert r.success == (int(net.predict(r.x_adv).argmax(1)) != int(y[r.index]))


def test_deepfool_and_cw_flips_verified(net, batch):
    x, y = batch
    for name, prm in (
        ("deepfool", {"steps": 20}),
        ("cw", {"steps": 50, "binary_search_steps": 3, "initial_const": 1.0}),
    ):
        res = attacks.run_attack(net, x[:3], y[:3], name, **prm)
        assert any(r.success for r in res), name
        for r in res:
            assert r.eps is None
            assert r.success == (r.flipped and int(net.predict(r.x_adv).argmax(1)) != int(y[r.index]))
            assert r.l2 == pytest.approx(float(r.delta.double().norm()), rel=1e-6)


def test_library_garbage_is_marked_failed(net, batch, monkeypatch):
    """A library returning all-zero images (DeepFool on degenerate models) is not a success."""
    import foolbox as fb

    x, y = batch

    def zeros(self, model, inputs, criterion, *, epsilons, **kw):
        z = torch.zeros_like(inputs)
        return z, z, torch.ones(inputs.shape[0], dtype=torch.bool)

    monkeypatch.setattr(fb.attacks.L2DeepFoolAttack, "__call__", zeros)
    res = attacks.deepfool(net, x[:3], y[:3])
    assert not any(r.success for r in res)
    assert all("all-zero" in r.note for r in res)


def test_user_errors(net, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown attack 'jsma'.*fgsm"):
        attacks.run_attack(net, x, y, "jsma")
    with pytest.raises(ValueError, match="strictly increasing"):
        attacks.fgsm(net, x, y, eps_grid=[0.1, 0.01])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        attacks.fgsm(net, x, y, eps_grid=[-0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        check_eps_grid([[0.1, 0.2]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.fgsm(net, x * 2, y)
    with pytest.raises(TypeError, match="integer dtype"):
        attacks.fgsm(net, x, y.float())
    with pytest.raises(ValueError, match="expected 6 labels"):
        attacks.fgsm(net, x, y[:2])
    with pytest.raises(TypeError, match="linstab.Network"):
        attacks.fgsm(net.module, x, y)
    with pytest.raises(TypeError, match="sequence of ints"):
        attacks.fgsm(net, x, [0.0] * x.shape[0])
    with pytest.raises(ValueError, match="expected 6 labels"):
        attacks.fgsm(net, x, [int(v) for v in y[:2]])
    assert default_eps_grid().numel() == 33


def test_labels_as_a_list_or_array_match_the_tensor(net, batch):
    x, y = batch
    ref = [r.eps for r in attacks.fgsm(net, x[:2], y[:2])]
    assert [r.eps for r in attacks.fgsm(net, x[:2], [int(v) for v in y[:2]])] == ref
    assert [r.eps for r in attacks.fgsm(net, x[:2], y[:2].numpy().astype(np.int32))] == ref


def test_training_mode_is_refused():
    net = make_net("akamaster")
    net.model.train()
    x = tiny_image(0).unsqueeze(0)
    with pytest.raises(ValueError, match="training mode"):
        attacks.fgsm(net, x, torch.tensor([0]))
    assert net.model.training  # linstab never changes the mode


@pytest.mark.slow
def test_attacks_on_resnet20(shared_weights):
    import linstab

    net = linstab.load_model("resnet20-akamaster")
    x, y = linstab.default_images([0, 1])
    for name in ("fgsm", "pgd", "deepfool"):
        res = attacks.run_attack(net, x, y, name)
        for r in res:
            assert r.success, (name, r.note)
            assert int(net.predict(r.x_adv).argmax(1)) != int(y[r.index])
            assert 0 < r.linf < 0.1


# ---- controls: the adversarial direction without (or regardless of) a label flip ---------------
def test_fgsm_half_is_the_fgsm_direction_at_half_the_minimal_eps_and_does_not_flip(net, batch):
    x, y = batch
    base = attacks.fgsm(net, x, y, eps_grid=GRID)
    half = attacks.run_attack(net, x, y, "fgsm-half", eps_grid=GRID)
    direction = _fgsm_direction(net, x, y)
    checked = 0
    for b, h in zip(base, half, strict=True):
        assert h.attack == "fgsm-half"
        if not b.success:
            assert not h.success
            continue
        assert h.params["eps_min"] == pytest.approx(b.eps)
        assert h.eps == pytest.approx(0.5 * b.eps)
        assert torch.allclose(h.x_adv, (x[h.index] + h.eps * direction[h.index]).clamp(0, 1))
        # success means: a valid perturbation that does NOT flip the label (checked independently)
        assert h.success == (not h.flipped)
        if h.success:
            assert int(net.predict(h.x_adv).argmax(1)) == int(y[h.index])
            checked += 1
    assert checked >= 3
    with pytest.raises(ValueError, match="scale"):
        attacks.fgsm_half(net, x, y, scale=1.0)


def test_fixed_eps_fgsm_and_bim_stay_in_the_budget_whether_or_not_they_flip(net, batch):
    x, y = batch
    eps = attacks.KURAKIN_EPS
    fixed = attacks.run_attack(net, x, y, "fgsm-fixed")
    direction = _fgsm_direction(net, x, y)
    for r in fixed:
        assert r.success and r.eps == pytest.approx(eps)  # a control: success does not need a flip
        assert torch.allclose(r.x_adv, (x[r.index] + eps * direction[r.index]).clamp(0, 1))
    res = attacks.run_attack(net, x, y, "bim")
    assert res[0].params["steps"] == 10  # min(8 + 4, 1.25 * 8) for eps = 8/255
    for r in res:
        assert r.success and r.linf <= eps + 1e-6
        assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
        assert r.flipped == (int(net.predict(r.x_adv).argmax(1)) != int(y[r.index]))
    # one BIM step of size eps is FGSM at eps
    one = attacks.bim(net, x, y, eps=eps, step=eps, steps=1)
    for a, b in zip(one, fixed, strict=True):
        assert torch.allclose(a.x_adv, b.x_adv, atol=1e-7)
    # the iterations increase the loss over one FGSM step (same budget)
    loss = [F.cross_entropy(net.module(torch.stack([r.x_adv for r in rr])), y).item() for rr in (fixed, res)]
    assert loss[1] >= loss[0] - 1e-6
    with pytest.raises(ValueError, match="steps"):
        attacks.bim(net, x, y, steps=0)


def _threshold_flips(thresholds, calls):
    """A flip test with a known minimal eps per image (monotone), counting the images tested."""

    def flips(rows, e):
        calls.append(len(rows))
        return torch.tensor([float(v) >= thresholds[i] for i, v in zip(rows, e.tolist(), strict=True)])

    return flips


@pytest.mark.parametrize("scan", [True, False])
def test_min_eps_search_brackets_the_threshold_on_both_grid_walks(scan):
    grid = default_eps_grid()
    # below the grid, on grid values, between them, at the top, above the grid
    thresholds = {0: 5e-5, 1: float(grid[7]), 2: 0.5 * float(grid[12] + grid[13]), 3: 0.3, 4: 0.9}
    calls = []
    found, extra = attacks._min_eps_search(
        _threshold_flips(thresholds, calls), list(thresholds), grid, 1e-3, 60, False, "t", scan=scan
    )
    assert sorted(found) == [0, 1, 2, 3]  # image 4 flips nowhere on the grid
    expected_index = {0: 0, 1: 7, 2: 13, 3: 32}
    for i, j in expected_index.items():
        assert extra[i]["grid_index"] == j
        assert extra[i]["eps_lo"] < thresholds[i] <= found[i]
        assert found[i] - extra[i]["eps_lo"] <= 1e-3 * found[i]
    n_tests = max(e["grid_tests"] for e in extra.values())
    if scan:
        assert n_tests == 33  # image 3 flips at the last grid value
    else:
        assert n_tests <= 6  # ceil(log2(34)) per image, whatever the threshold


def test_grid_bisection_returns_a_flipping_value_whose_predecessor_does_not_flip():
    grid = default_eps_grid()
    # not monotone: flips on grid indices 3 and 20..32 only
    flipping = {3, *range(20, 33)}
    tested = []

    def flips(rows, e):
        out = []
        for v in e.tolist():
            j = int(torch.argmin((grid - v).abs()))
            hit = bool(torch.isclose(grid[j], torch.tensor(v, dtype=grid.dtype))) and j in flipping
            tested.append((j, hit))
            out.append(hit)
        return torch.tensor(out)

    first, tests = attacks._bisect_grid(flips, [0], grid, False, "t")
    j = first[0]
    assert j in flipping and (j - 1 not in flipping)
    assert (j, True) in tested and (j == 0 or (j - 1, False) in tested)
    assert tests[0] <= 6


def test_pgd_result_of_an_image_does_not_depend_on_the_batch_and_rng_is_untouched(net, batch):
    x, y = batch
    state = torch.get_rng_state()
    four = attacks.pgd(net, x[:4], y[:4], seed=5, **FAST_PGD)
    assert torch.equal(torch.get_rng_state(), state)

    # another first image, one whose search ends elsewhere than image 0's, changes which
    # images share each PGD run of the search
    def outcome(r):
        return r.success, r.params.get("grid_index")

    six = attacks.pgd(net, x, y, seed=5, **FAST_PGD)
    swap = [r.index for r in six[1:] if outcome(r) != outcome(four[0])]
    assert swap, "the test needs an image whose search ends elsewhere than image 0's"
    order = [swap[-1], 1, 2, 3]
    other = attacks.pgd(net, x[order], y[order], seed=5, **FAST_PGD)
    for a, b in zip(four[1:], other[1:], strict=True):
        assert a.success == b.success and a.eps == b.eps
        if a.x_adv is not None:
            assert torch.equal(a.x_adv, b.x_adv)
    other_seed = attacks.pgd(net, x[:4], y[:4], seed=6, **FAST_PGD)
    pairs = zip(four, other_seed, strict=True)
    assert any(a.x_adv is not None and not torch.equal(a.x_adv, b.x_adv) for a, b in pairs)


def test_pgd_grid_scan_finds_the_first_flipping_grid_value_and_bisection_agrees(net, batch):
    x, y = batch
    scan = attacks.pgd(net, x[:4], y[:4], seed=2, grid_search="scan", **FAST_PGD)
    bis = attacks.pgd(net, x[:4], y[:4], seed=2, **FAST_PGD)
    assert any(r.success for r in scan)
    for a, b in zip(scan, bis, strict=True):
        assert a.params["grid_search"] == "scan" and b.params["grid_search"] == "bisect"
        if a.success:
            j = a.params["grid_index"]
            assert a.params["grid_tests"] == j + 1  # every grid value up to the first flip
            # the bisection ends on a flipping value whose predecessor does not flip; the
            # scan's first flip is at or below it
            assert b.success and b.params["grid_index"] >= j
            assert b.params["grid_tests"] <= 5  # ceil(log2(16 + 1))
    with pytest.raises(ValueError, match="grid_search"):
        attacks.pgd(net, x[:1], y[:1], grid_search="walk")


def test_attack_parameters_that_make_no_attack_and_impossible_labels_are_refused(net, batch):
    x, y = batch
    for kw in ({"steps": 0}, {"steps": -3}, {"rel_stepsize": 0.0}, {"max_bisect": 0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            attacks.pgd(net, x[:1], y[:1], **kw)
    for kw in ({"steps": 0}, {"binary_search_steps": -1}, {"stepsize": 0.0}, {"confidence": -1.0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            attacks.carlini_wagner(net, x[:1], y[:1], **kw)
    for kw in ({"steps": 0}, {"candidates": 1}, {"overshoot": -0.1}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            attacks.deepfool(net, x[:1], y[:1], **kw)
    for bad in (torch.tensor([10, 3]), torch.tensor([-1, 3])):
        with pytest.raises(ValueError, match=r"class indices in 0\.\.9"):
            attacks.fgsm(net, x[:2], bad)


# ---- the user's model is never modified: input gradients only --------------------------------
CHEAP = {
    "fgsm": {"eps_grid": GRID},
    "pgd": FAST_PGD,
    "deepfool": {"steps": 20},
    "cw": {"steps": 30, "binary_search_steps": 2, "initial_const": 1.0},
    "fgsm-half": {"eps_grid": GRID},
    "fgsm-fixed": {},
    "bim": {"steps": 3},
}


def test_the_cheap_settings_cover_every_registered_attack():
    assert set(CHEAP) == set(attacks.ATTACKS) | set(attacks.CONTROLS) == set(attacks._FUNCS)


@pytest.mark.parametrize("name", [*attacks.ATTACKS, *attacks.CONTROLS])
def test_attacks_leave_parameter_grads_and_requires_grad_flags_untouched(name):
    net = make_net("option-A")
    x = torch.stack([tiny_image(s) for s in range(3)])
    y = net.predict(x).argmax(1)  # every image correctly classified: every image is attacked
    params = list(net.model.named_parameters())
    # the three states a user's parameter can be in: no grad yet, a grad from the user's own
    # training step, frozen
    g = torch.Generator().manual_seed(1)
    for j, (_, p) in enumerate(params):
        if j % 3 == 1:
            p.grad = torch.randn(p.shape, generator=g)
        elif j % 3 == 2:
            p.requires_grad_(False)
    before = {n: (p.requires_grad, None if p.grad is None else p.grad.clone()) for n, p in params}
    assert sum(v[1] is None and v[0] for v in before.values()) > 0  # some grads are None
    res = attacks.run_attack(net, x, y, name, **CHEAP[name])
    assert len(res) == 3 and not any(r.skipped for r in res)
    for n, p in net.model.named_parameters():
        flag, grad = before[n]
        assert p.requires_grad == flag, n
        if grad is None:
            assert p.grad is None, f"{name} left a .grad on {n}"
        else:
            assert p.grad is not None and torch.equal(p.grad, grad), f"{name} changed {n}.grad"


def test_the_foolbox_view_differentiates_the_input_exactly_and_nothing_else(net, batch):
    x, y = batch
    view = attacks._EvalView(net.module)
    assert list(view.parameters()) == []  # foolbox's .to(device) cannot reach the user's model
    xi = x.clone().requires_grad_(True)
    F.cross_entropy(view(xi), y, reduction="sum").backward()
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.cross_entropy(net.module(xr), y, reduction="sum"), xr)
    torch.testing.assert_close(xi.grad, ref, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in net.model.parameters())
    # without an input that needs a gradient the model runs without a graph
    assert not view(x).requires_grad


def test_attack_parameters_are_checked_before_any_work(net, batch, monkeypatch):
    x, y = batch
    calls = []
    monkeypatch.setattr(type(net), "predict", lambda self, *a, **k: calls.append(1))
    cases = [
        ("pgd", {"eps": -0.1}, ValueError, r"eps: expected a float in \(0, 1\]"),
        ("pgd", {"eps": float("nan")}, ValueError, "eps"),
        ("pgd", {"seed": 2**70}, ValueError, "seed"),
        ("pgd", {"seed": 1.5}, TypeError, "seed"),
        ("pgd", {"random_start": "yes"}, TypeError, "random_start"),
        ("fgsm", {"eps": 2.0}, ValueError, "eps"),
        ("fgsm", {"rtol": 1}, ValueError, "rtol"),
        ("fgsm", {"max_bisect": -1}, ValueError, "max_bisect"),
        ("deepfool", {"loss": "hinge"}, ValueError, "loss"),
        ("cw", {"steps": 0}, ValueError, "steps"),
        ("cw", {"abort_early": 1}, TypeError, "abort_early"),
        ("fgsm-half", {"scale": 1.0}, ValueError, "scale"),
        ("fgsm-fixed", {"eps": 0}, ValueError, "eps"),
        ("bim", {"step": -1.0}, ValueError, "step"),
        ("bim", {"steps": 0}, ValueError, "steps"),
        ("pgd", {"epsilon": 0.1}, TypeError, r"unknown parameter\(s\) epsilon; expected some of eps, "),
    ]
    for name, kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            attacks.check_attack_params(name, kw)
        with pytest.raises(exc, match=match):
            attacks.run_attack(net, x, y, name, **kw)
    assert calls == []  # refused before the model ran once
    with pytest.raises(ValueError, match="unknown attack 'jsma'"):
        attacks.check_attack_params("jsma")
    full = attacks.check_attack_params("pgd", {"eps": 0.1})
    assert full["eps"] == 0.1 and full["steps"] == 40 and "net" not in full


def test_numpy_scalars_are_accepted_like_python_numbers_and_bools_are_not(net, batch):
    """eps/rtol/steps/labels from NumPy (e.g. a config loaded with numpy) are real numbers."""

    x, y = batch
    full = attacks.check_attack_params("fgsm", {"eps": np.float32(0.1), "rtol": np.float64(0.01)})
    assert full["eps"] == pytest.approx(0.1)
    attacks.check_attack_params("fgsm-half", {"scale": np.float32(0.5)})
    attacks.check_attack_params("bim", {"eps": np.float32(0.03), "step": np.float32(0.01)})
    res = attacks.run_attack(net, x[:1], np.int64(int(y[0])), "bim", steps=np.int64(2))
    assert res[0].params["steps"] == 2 and type(res[0].params["steps"]) is int
    assert res[0].label == int(y[0])
    with pytest.raises(ValueError, match="steps: expected an integer >= 1"):
        attacks.check_attack_params("bim", {"steps": True})
    with pytest.raises(ValueError, match=r"eps: expected a float in \(0, 1\]"):
        attacks.check_attack_params("fgsm", {"eps": np.bool_(True)})
    with pytest.raises(TypeError, match="labels"):
        attacks.fgsm(net, x[:1], True)


def test_a_library_all_zero_image_is_reported_as_no_perturbation_not_as_a_flip(net, batch, monkeypatch):
    """foolbox's CW returns its all-zero start for an image it could not attack: that is "nothing
    found" (x_adv = x, not flipped, zero norm), not the zero image's prediction and ||x||."""
    import foolbox as fb

    x, y = batch
    zero_pred = int(net.predict(torch.zeros_like(x[:1])).argmax(1))
    assert any(int(v) != zero_pred for v in y[:3])  # the zero image would "flip" these

    def zeros(self, model, inputs, criterion, *, epsilons, **kw):
        z = torch.zeros_like(inputs)
        return z, z, torch.zeros(inputs.shape[0], dtype=torch.bool)

    monkeypatch.setattr(fb.attacks.L2CarliniWagnerAttack, "__call__", zeros)
    for r in attacks.carlini_wagner(net, x[:3], y[:3]):
        assert not r.success and not r.flipped and "all-zero" in r.note
        assert r.adv_pred == r.clean_pred
        assert torch.equal(r.x_adv, r.x) and r.l2 == 0 and r.linf == 0


def test_fgsm_that_clips_a_dark_image_to_zero_is_a_valid_perturbation(net, monkeypatch):
    """An image that the FGSM step legitimately clips to all zero is a real perturbation (the
    all-zero guard is for library outputs only)."""
    x = torch.full((1, 3, 8, 8), 0.01)
    y = net.predict(x).argmax(1)
    monkeypatch.setattr(attacks, "_sign_gradient", lambda net, x, labels: -torch.ones_like(x))
    (r,) = attacks.fgsm_fixed(net, x, y, eps=0.05)
    assert torch.equal(r.x_adv, torch.zeros_like(x[0]))
    assert r.success, r.note
    assert r.l2 == pytest.approx(0.01 * 192**0.5) and r.linf == pytest.approx(0.01)
