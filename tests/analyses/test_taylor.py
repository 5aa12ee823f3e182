"""The Jacobian (Taylor) test and the core CLI."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from factories import TanhUnit, make_net, randomize_bn, tiny_image

import linstab
from linstab.analyses.taylor import jacobian_test, smooth_copy
from linstab.cli import main
from linstab.data.selection import parse_index_spec
from linstab.models import ConvBlock, ResidualUnit


@pytest.mark.parametrize("smooth", ["softplus", "gelu"])
@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-bottleneck"])
def test_smooth_taylor_order_two(kind, smooth):
    net = make_net(kind, seed=1)
    for u in (net.units[0], net.units[-1]):
        for method in ("closed", "autodiff"):
            r = jacobian_test(net, tiny_image(2), u.stage, u.index, smooth=smooth, method=method)
            assert r.order >= 1.9, r.table()
            assert abs(r.order0 - 1) < 0.05
            assert r.passed


def test_relu_taylor_is_exact_for_small_eps():
    net = make_net("option-B", seed=2)
    r = jacobian_test(net, tiny_image(1), 2, 1)
    assert r.activation == "relu"
    assert r.exact_below_eps is not None and r.exact_below_eps <= 1e-2
    assert all(e <= r.floor for e, s in zip(r.err1, r.eps, strict=True) if s <= r.exact_below_eps)
    assert r.passed


def test_wrong_jacobian_fails_the_test(monkeypatch):
    """A Jacobian off by a factor must not pass: the check can fail."""
    net = make_net("option-A", seed=3)
    from linstab import operators

    orig = operators.UnitJacobian._matmat
    monkeypatch.setattr(operators.UnitJacobian, "_matmat", lambda self, V: 1.01 * orig(self, V))
    r = jacobian_test(net, tiny_image(), 1, 1, smooth="softplus", method="closed")
    assert r.order < 1.5 and not r.passed


def test_smooth_copy_leaves_original():
    net = make_net("option-B")
    unit = net.units[0].canonical
    s = smooth_copy(unit, "gelu")
    assert any(isinstance(m, torch.nn.GELU) for m in s.modules())
    assert not any(isinstance(m, torch.nn.GELU) for m in unit.modules())
    with pytest.raises(ValueError, match="softplus"):
        smooth_copy(unit, "tanh")


def test_taylor_bad_arguments():
    net = make_net("option-B")
    with pytest.raises(ValueError, match="steps"):
        jacobian_test(net, tiny_image(), 1, 1, steps=1)
    with pytest.raises(ValueError, match="eps0"):
        jacobian_test(net, tiny_image(), 1, 1, eps0=0)
    # an overflow of 10**330 after the linearization, NaN/inf tables for infinite or huge steps
    with pytest.raises(ValueError, match="steps: expected at most 30"):
        jacobian_test(net, tiny_image(), 1, 1, steps=330)
    for eps0 in (float("inf"), float("nan"), 1e300, True, "0.1"):
        with pytest.raises(ValueError, match=r"eps0: expected a number in \(0, 10\]"):
            jacobian_test(net, tiny_image(), 1, 1, eps0=eps0)
    assert jacobian_test(net, tiny_image(), 1, 1, eps0=10.0, steps=30).passed
    with pytest.raises(ValueError, match="method"):
        jacobian_test(net, tiny_image(), 1, 1, method="x")


def test_an_unknown_method_is_refused_before_the_linearization(monkeypatch):
    net = make_net("option-B")

    def no_work(*a, **k):
        raise AssertionError("linearized before the arguments were checked")

    monkeypatch.setattr(net, "linearize", no_work)
    with pytest.raises(ValueError, match="method must be"):
        jacobian_test(net, tiny_image(), 1, 1, method="x")


def test_parse_index_spec():
    assert parse_index_spec("0-3,7", 20) == [0, 1, 2, 3, 7]
    assert parse_index_spec("all", 3) == [0, 1, 2]
    for bad in ["3-1", "a", "25"]:
        with pytest.raises(ValueError):
            parse_index_spec(bad, 20)


@pytest.mark.slow
def test_real_unit_taylor_and_cli(shared_weights, capsys):
    net = linstab.load_model("resnet56-akamaster")
    x, _ = linstab.default_images([0])
    r = jacobian_test(net, x[0], 3, 5, smooth="softplus")
    assert r.order >= 1.9
    rc = main(
        [
            "jacobian-test",
            "--model",
            "resnet20-akamaster",
            "--image",
            "0",
            "--unit",
            "2.1",
            "--smooth",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["order"] >= 1.9 and out["unit"] == "2.1"
    assert main(["predict", "--model", "resnet20-akamaster", "--images", "0-3"]) == 0
    assert "accuracy: 4/4" in capsys.readouterr().out


def test_cli_errors(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("LINSTAB_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(
        "linstab.models.weights._download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    rc = main(["info", "--model", "resnet56-akamaster"])
    err = capsys.readouterr().err
    assert rc == 2 and "LINSTAB_WEIGHTS_DIR" in err
    assert main(["info", "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["models"]) == 0


def test_a_softplus_without_positive_sharpness_is_refused_before_any_work():
    net = make_net("option-B")
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            jacobian_test(net, tiny_image(), 1, 1, smooth="softplus", beta=beta)
    assert jacobian_test(net, tiny_image(), 1, 1, smooth="gelu", beta=0.0).unit == "1.1"  # beta unused


def test_a_unit_that_changes_its_input_in_place_is_tested_at_the_unchanged_point():
    """F(x) ran the module on a view of the point: a unit doing ``relu_(x)`` on its input
    moved the point itself, and a correct Jacobian failed the test (order 1)."""

    class InPlaceInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            x = torch.nn.functional.relu(x, inplace=True)
            return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))

    torch.manual_seed(0)
    stem = torch.nn.Conv2d(3, 4, 3, padding=1)  # negative values at unit 1.1's input
    model = torch.nn.Sequential(stem, InPlaceInput(), InPlaceInput()).eval()
    net = linstab.Network(model, input_shape=(3, 8, 8), unit_types=(InPlaceInput,))
    r = jacobian_test(net, tiny_image(), 1, 1)
    assert r.method == "autodiff"
    assert r.exact_below_eps is not None and r.passed, r.table()


def _act_net(inner=torch.nn.SiLU, outer=torch.nn.ReLU, seed: int = 0) -> linstab.Network:
    """A tiny net of two regular linstab units ``outer(x + conv-bn(inner(conv-bn(x))))``, 4
    channels, on ``(3, 8, 8)`` images."""
    torch.manual_seed(seed)

    def unit():
        body = torch.nn.Sequential(
            OrderedDict(conv1=ConvBlock(4, 4, activation=inner()), conv2=ConvBlock(4, 4))
        )
        return ResidualUnit(body, None, outer())

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.Sequential(unit(), unit()),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 10),
    )
    randomize_bn(model, seed)
    return linstab.Network(model.eval(), input_shape=(3, 8, 8))


def _tanh_net() -> linstab.Network:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), TanhUnit(), TanhUnit()).eval()
    return linstab.Network(model, input_shape=(3, 8, 8), unit_types=(TanhUnit,))


@pytest.mark.parametrize("method", ["closed", "autodiff"])
@pytest.mark.parametrize("outer", [torch.nn.ReLU, torch.nn.SiLU])
def test_a_smooth_unit_is_labelled_by_its_activations_and_its_order_is_measured(method, outer):
    """A SiLU branch was labelled "relu", and its remainder reaching round-off was reported as
    "no activation crosses zero" (``exact_below_eps``): a smooth unit is never exact."""
    net = _act_net(outer=outer)
    r = jacobian_test(net, tiny_image(), 1, 1, method=method)
    assert r.method == method
    assert r.activation != "relu" and r.activation.startswith("as-is (") and "silu" in r.activation
    assert ("relu" in r.activation) == (outer is torch.nn.ReLU)
    assert not r.piecewise_linear
    assert r.exact_below_eps is None, r.table()
    assert r.floor_below_eps is not None  # the floor was reached: that is not exactness
    assert abs(r.order - 2) < 0.1 and r.passed, r.table()
    assert "crosses zero" not in r.table() and "round-off floor reached" in r.table()


def test_an_unrecognized_smooth_unit_is_labelled_by_its_functional_activation():
    r = jacobian_test(_tanh_net(), tiny_image(), 1, 1)
    assert r.method == "autodiff" and r.activation == "as-is (tanh)"
    assert r.exact_below_eps is None and not r.piecewise_linear
    assert r.order >= 1.9 and r.passed, r.table()


@pytest.mark.parametrize("kind", ["option-A", "akamaster", "tv-basic"])
def test_relu_units_keep_their_label_and_exactness(kind):
    """Module (nn.ReLU) and functional (F.relu) ReLUs alike: "relu", exact below some eps."""
    net = make_net(kind, seed=2)
    for method in ("closed", "autodiff"):
        r = jacobian_test(net, tiny_image(1), 1, 1, method=method)
        assert r.activation == "relu" and r.piecewise_linear
        assert r.exact_below_eps is not None and r.exact_below_eps == r.floor_below_eps
        assert r.passed, r.table()


def test_other_piecewise_linear_activations_are_named_and_exact():
    r = jacobian_test(_act_net(inner=lambda: torch.nn.LeakyReLU(0.1)), tiny_image(), 1, 1)
    assert r.activation == "as-is (leaky_relu, relu)" and r.piecewise_linear
    assert r.exact_below_eps is not None and r.passed, r.table()


def test_smooth_leaves_other_activations_in_the_label():
    net = _act_net()
    r = jacobian_test(net, tiny_image(), 1, 1, smooth="gelu")
    assert r.activation == "gelu + as-is (silu)" and r.exact_below_eps is None
    r = jacobian_test(make_net("option-B"), tiny_image(), 1, 1, smooth="softplus", beta=5)
    assert r.activation == "softplus(beta=5)"


def test_the_address_and_the_unit_form_are_checked_before_any_work(monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("linearized before the arguments were checked")

    net = make_net("option-B")
    monkeypatch.setattr(net, "linearize", no_work)
    with pytest.raises(ValueError, match=r"stage must be in 1\.\.3, got 9"):
        jacobian_test(net, tiny_image(), 9, 1)
    with pytest.raises(ValueError, match=r"must be in 1\.\.2, got 7"):
        jacobian_test(net, tiny_image(), 1, 7)
    with pytest.raises(TypeError, match="int"):
        jacobian_test(net, tiny_image(), 1.0, 1)
    with pytest.raises(TypeError, match="steps must be an int"):
        jacobian_test(net, tiny_image(), 1, 1, steps=3.0)
    tnet = _tanh_net()
    monkeypatch.setattr(tnet, "linearize", no_work)
    for smooth in ("softplus", "gelu"):
        with pytest.raises(
            ValueError, match=f"smooth='{smooth}' needs a unit of a recognized form.*TanhUnit"
        ):
            jacobian_test(tnet, tiny_image(), 1, 1, smooth=smooth)
    with pytest.raises(ValueError, match="method='closed' needs a unit of a recognized form.*TanhUnit"):
        jacobian_test(tnet, tiny_image(), 1, 2, method="closed")


def test_cli_jacobian_test_labels_a_smooth_unit(monkeypatch, capsys):
    import linstab.cli.common as common

    net = _act_net()
    monkeypatch.setattr(common, "network_from_args", lambda args: net)
    monkeypatch.setattr(common, "images_from_args", lambda args, net=None: (tiny_image()[None], None, ["t"]))
    assert main(["jacobian-test", "--unit", "1.2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["activation"] == "as-is (silu, relu)" and out["exact_below_eps"] is None
    assert out["order"] >= 1.9 and out["unit"] == "1.2"
    assert main(["jacobian-test", "--unit", "1.2"]) == 0
    assert "activation as-is (silu, relu)" in capsys.readouterr().out


def test_a_seed_that_is_not_an_int_is_refused_before_the_linearization(monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("linearized before the seed was checked")

    net = make_net("option-A")
    monkeypatch.setattr(net, "linearize", no_work)
    for seed in (1.5, True, "0"):
        with pytest.raises(TypeError, match="seed must be an int"):
            jacobian_test(net, tiny_image(), 1, 1, seed=seed)
    with pytest.raises(ValueError, match=r"seed must be in \[.*torch.Generator"):
        jacobian_test(net, tiny_image(), 1, 1, seed=2**70)  # was torch's 'Overflow when unpacking'
