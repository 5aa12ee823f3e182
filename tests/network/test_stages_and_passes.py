"""How a network's units are grouped into stages, how many forward passes building and linearizing
a network takes, and networks used inside ``torch.inference_mode()``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from factories import TVBasicBlock, TVResNet, randomize_bn, tiny_image
from torch import nn

import linstab
from linstab.models import ResidualUnit
from linstab.network.imagenet import imagenet_network

F64 = torch.float64


class _Body(nn.Module):
    """A stem conv, the blocks of ``body`` (one module, any layers between them), a linear head."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.stem, self.body, self.fc = nn.Conv2d(3, 4, 3, 1, 1), body, nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.body(F.relu(self.stem(x))).mean((2, 3)))


def _net(body: nn.Module) -> linstab.Network:
    torch.manual_seed(0)
    return linstab.Network(randomize_bn(_Body(body), 0).eval(), input_shape=(3, 8, 8))


def _b() -> nn.Module:
    return TVBasicBlock(4, 4)


@pytest.mark.parametrize("between", [nn.MaxPool2d(2), nn.Conv2d(4, 4, 1)], ids=["pooling", "same-shape conv"])
def test_a_layer_between_units_of_one_module_starts_a_new_stage(between):
    """Units held directly by one module with a pooling (or a same-shape conv) between them were
    one stage: ``lin.stage(1)`` then raised 'units 1.2 and 1.3 are not chained' (and the stage
    spanned two spatial sizes), so no stage-level analysis could run."""
    net = _net(nn.Sequential(_b(), _b(), between, _b(), _b()))
    assert [(u.address, u.name) for u in net.units] == [
        ("1.1", "body.0"),
        ("1.2", "body.1"),
        ("2.1", "body.3"),
        ("2.2", "body.4"),
    ]
    lin = net.linearize(tiny_image(), F64)
    for s in (1, 2):
        first, second = (lin.unit(s, k).materialize() for k in (1, 2))
        S = lin.stage(s).materialize()
        assert torch.allclose(S, second @ first, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="not chained"):
        lin.network()  # the layer between the stages is not a unit: no product of units is the network


def test_chained_units_stay_one_stage_and_nested_containers_are_stages():
    """A layer that passes its input through (dropout in eval mode) keeps the units one stage;
    units of a nested container are a stage of their own, as documented (a stage is a run of
    units held by one module)."""
    net = _net(nn.Sequential(_b(), nn.Dropout(0.5), _b(), nn.Identity(), _b()))
    assert [u.address for u in net.units] == ["1.1", "1.2", "1.3"]
    net.linearize(tiny_image()).stage(1)
    net = _net(nn.Sequential(nn.Sequential(_b(), _b()), _b()))
    assert [(u.address, u.name) for u in net.units] == [
        ("1.1", "body.0.0"),
        ("1.2", "body.0.1"),
        ("2.1", "body.1"),
    ]


def _count_passes(model: nn.Module, monkeypatch) -> dict[str, int]:
    """Counters of the model's forward passes, its units' and linstab's twins' forward passes."""
    counts = {"model": 0, "units": 0, "twins": 0}
    model.register_forward_pre_hook(lambda *_: counts.__setitem__("model", counts["model"] + 1))
    for m in model.modules():
        if isinstance(m, TVBasicBlock):
            m.register_forward_pre_hook(lambda *_: counts.__setitem__("units", counts["units"] + 1))
    twin_forward = ResidualUnit.forward

    def counted(self, x):
        counts["twins"] += 1
        return twin_forward(self, x)

    monkeypatch.setattr(ResidualUnit, "forward", counted)
    return counts


def test_building_a_network_runs_no_extra_forward_pass_per_unit(monkeypatch):
    """Building the network ran each recognized unit's twin once more in float64 (one extra
    forward pass per unit) although the closed-form check, run on the inputs recorded by one
    pass of the whole model, already shows that the twin of plain layers reproduces the unit."""
    torch.manual_seed(0)
    model = randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), 0).eval()
    counts = _count_passes(model, monkeypatch)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert all(u.canonical is not None for u in net.units)
    assert [u.shortcut for u in net.units] == ["identity", "identity", "conv-bn", "identity"]
    # one pass records the units' inputs, a second checks that the model is deterministic
    assert counts == {"model": 2, "units": 2 * len(net.units), "twins": 0}
    counts.update(model=0, units=0)
    lin = net.linearize(tiny_image(), F64)
    for u in net.units:
        lin.unit(u.stage, u.index)
    assert counts == {"model": 1, "units": len(net.units), "twins": 0}


def test_a_hooked_layer_still_has_its_twin_run_and_its_shortcut_known(monkeypatch):
    """Where a twin's copied layer carries a hook, the twin's own pass still runs: the closed form
    is refused, the shortcut kind stays known."""
    torch.manual_seed(0)
    model = randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), 0).eval()
    model.layer2[0].conv2.register_forward_hook(lambda _m, _a, out: 0.5 * out)
    counts = _count_passes(model, monkeypatch)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert [u.canonical is not None for u in net.units] == [True, True, False, True]
    assert net.unit(2, 1).shortcut == "conv-bn"
    assert counts["twins"] == 1


def test_networks_work_inside_inference_mode_and_models_built_there_are_refused_clearly():
    """Inside ``torch.inference_mode()`` building a network failed with 'does not run on images
    of input_shape ... Inference tensors do not track version counter', and ``load_model`` /
    ``imagenet_network`` failed the same way; a model whose weights were made in inference mode
    must be refused by name."""
    torch.manual_seed(0)
    model = randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), 0).eval()
    with torch.inference_mode():
        net = linstab.Network(model, input_shape=(3, 8, 8))
        lin = net.linearize(tiny_image(), F64)
        for method in ("closed", "autodiff"):
            J = lin.unit(2, 1, method)
            assert (J.T @ (J @ torch.ones(J.shape[1], dtype=F64))).isfinite().all()
        assert lin.stage(1).materialize().shape == (256, 256)
        assert net.predict(tiny_image()).shape == (1, 10)
        inet = imagenet_network("resnet18", width=8, input_size=32)
        assert inet.linearize(torch.rand(3, 32, 32)).unit(1, 1).materialize().shape == (512, 512)
        built_here = randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), 0).eval()
    with pytest.raises(ValueError, match=r"inference tensors \(conv1\.weight.*outside"):
        linstab.Network(built_here, input_shape=(3, 8, 8))
    assert all(not p.is_inference() for p in model.parameters())
