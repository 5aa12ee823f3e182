"""Network discovery, addresses, unit kinds, linearization bookkeeping and user errors."""

from __future__ import annotations

import copy

import pytest
import torch
from factories import AkaResNet, TVBasicBlock, TVResNet, make_net, randomize_bn, tiny_image

import linstab
from linstab.network import parse_unit


def test_discovery_addresses_and_kinds(tiny_net):
    stages = tiny_net.stages
    assert len(stages) >= 2
    for s, units in enumerate(stages, start=1):
        for k, u in enumerate(units, start=1):
            assert (u.stage, u.index) == (s, k)
            assert u.address == f"{s}.{k}"
            assert tiny_net.unit(s, k) is u
    first = [u for u in tiny_net.units if u.index == 1 and u.stage > 1]
    assert all(u.kind == "downsampling" for u in first)
    assert all(u.canonical is not None for u in tiny_net.units)
    assert "1.1" in tiny_net.describe()


def test_linearization_chain_and_point(tiny_net):
    lin = tiny_net.linearize(tiny_image(5), dtype=torch.float64)
    assert len(lin.inputs) == len(tiny_net.units)
    for i in range(len(tiny_net.units) - 1):
        assert torch.equal(lin.outputs[i], lin.inputs[i + 1])
    # the closed form reproduces each unit's output at the point
    for i, u in enumerate(tiny_net.units):
        J = lin.unit(u.stage, u.index, "closed")
        assert torch.allclose(J.output, lin.outputs[i][0], rtol=1e-12, atol=1e-12)
    # a (1,3,H,W) image works the same
    lin2 = tiny_net.linearize(tiny_image(5).unsqueeze(0), dtype=torch.float64)
    assert torch.equal(lin2.inputs[0], lin.inputs[0])


def test_user_model_is_never_modified():
    model = AkaResNet(2, (4, 8))
    randomize_bn(model, 0)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    net = linstab.Network(model, input_shape=(3, 8, 8))
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    lin.network().materialize()
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    assert not model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_training_mode_is_refused_not_changed():
    model = TVResNet(TVBasicBlock)
    assert model.training
    with pytest.raises(ValueError, match="training mode"):
        linstab.Network(model, input_shape=(3, 8, 8))
    assert model.training  # linstab did not call eval()


def test_no_units_and_bad_inputs():
    with pytest.raises(ValueError, match="no residual units"):
        linstab.Network(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval())
    with pytest.raises(TypeError):
        linstab.Network("resnet")
    net = make_net("option-B")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.linearize(tiny_image() * 3)
    with pytest.raises(ValueError, match="NaN"):
        net.linearize(torch.full((3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="3 RGB channels"):
        net.linearize(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="one image"):
        net.linearize(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="dtype"):
        net.linearize(tiny_image(), dtype=torch.float16)
    with pytest.raises(ValueError, match="unit of stage 1"):
        net.unit(1, 99)
    # predict and activations take the size the units were discovered at, like linearize
    for bad in (torch.rand(3, 1, 1), torch.rand(2, 3, 16, 16), torch.rand(3, 8, 6)):
        with pytest.raises(ValueError, match=r"expected images of shape \(3, 8, 8\)"):
            net.predict(bad)
        with pytest.raises(ValueError, match=r"expected images of shape \(3, 8, 8\)"):
            net.activations(bad)
    for bs, err in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="batch_size must be an int >= 1"):
            net.predict(tiny_image(), batch_size=bs)
    assert net.predict(torch.stack([tiny_image(0), tiny_image(1)]), batch_size=1).shape[0] == 2
    lin = net.linearize(tiny_image())
    for bad in (1.0, "1", None):
        with pytest.raises(TypeError, match="stage"):
            lin.stage(bad)


def test_parse_unit():
    assert parse_unit("1.5") == (1, 5)
    assert parse_unit("3.18") == (3, 18)
    for bad in ["1", "a.b", "0.1", "1.2.3", "-1.2"]:
        with pytest.raises(ValueError, match="STAGE.UNIT"):
            parse_unit(bad)


def test_custom_unit_types_use_autodiff():
    from factories import TanhUnit as Odd

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), Odd(), Odd()).eval()
    net = linstab.Network(model, input_shape=(3, 8, 8), unit_types=(Odd,))
    assert [u.address for u in net.units] == ["1.1", "1.2"]
    assert all(u.canonical is None and u.shortcut == "unknown" for u in net.units)
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    with pytest.raises(ValueError, match="no closed form"):
        lin.unit(1, 1, "closed")
    J = lin.unit(1, 1)  # auto -> autodiff
    from factories import dense_jacobian

    D = dense_jacobian(model[1], lin.inputs[0][0])
    assert float((J.materialize() - D).norm() / D.norm()) < 1e-10


def test_fingerprint_follows_the_weights_not_the_name():
    """Cached results are keyed by what a network computes: same name, other weights -> other
    key; an in-place change of a weight or of a BN statistic -> other key; same weights -> same."""
    a, b = make_net("option-A", seed=1), make_net("option-A", seed=2)
    assert a.name == b.name and a.fingerprint() != b.fingerprint()
    assert make_net("option-A", seed=1).fingerprint() == a.fingerprint()
    before = a.fingerprint()
    with torch.no_grad():
        next(a.model.parameters()).mul_(1.0 + 1e-6)
    assert a.fingerprint() != before
    after = a.fingerprint()
    bn = next(m for m in a.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.add_(1e-3)
    assert a.fingerprint() != after
    c = linstab.Network(a.model, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_shape=(3, 8, 8))
    d = linstab.Network(a.model, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), input_shape=(3, 8, 8))
    assert d.fingerprint() != c.fingerprint()  # the normalization is part of the function


class _Act(torch.nn.Module):
    """``act(x + conv(x))`` with the activation chosen in ``forward`` (no module of its own)."""

    def __init__(self, silu: bool = False, alpha: float = 1.0):
        super().__init__()
        self.c = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.alpha = alpha

    def forward(self, x):
        return torch.relu(self.alpha * x + self.c(x))


class _SiluAct(_Act):
    def forward(self, x):
        return torch.nn.functional.silu(self.alpha * x + self.c(x))


def _act_net(cls=_Act, **kw) -> linstab.Network:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), cls(**kw), cls(**kw)).eval()
    return linstab.Network(model, input_shape=(3, 8, 8), unit_types=(cls,), name="act")


def test_fingerprint_follows_the_architecture_not_only_the_weights():
    """A SiLU twin of a ReLU network (same state dict) shared its cached results, in a report's
    cache and within one run: the key now has the classes, attributes and code of the modules."""
    relu, silu, half = _act_net(), _act_net(_SiluAct), _act_net(alpha=0.5)
    assert relu.state_sha256() == silu.state_sha256() == half.state_sha256()
    assert len({relu.fingerprint(), silu.fingerprint(), half.fingerprint()}) == 3
    assert _act_net().fingerprint() == relu.fingerprint()  # rebuilt: the same key
    relu.model[1].alpha = relu.model[2].alpha = 0.5  # a skip scale set on the model later is seen too
    assert relu.architecture_sha256() != _act_net().architecture_sha256()
    assert relu.architecture_sha256() == _act_net(alpha=0.5).architecture_sha256()


def test_units_without_closed_form_fall_back_to_autodiff():
    """A float64 model, norm layers the closed form does not cover and blocks that only look like
    BasicBlocks (pre-activation: bn1 has the input's channels) are discovered, not crashed on;
    their units take the autodiff Jacobian under method='auto'."""
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)
    model = randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), 0).double().eval()
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert all(u.canonical is not None for u in net.units)
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    J = lin.unit(2, 1)
    assert torch.allclose(J.materialize(), lin.unit(2, 1, "autodiff").materialize(), atol=1e-12)

    gn = TVResNet(TVBasicBlock, (2, 2), (4, 8))
    for mod in list(gn.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(mod, name, nn.GroupNorm(2, child.num_features))
    net = linstab.Network(gn.eval(), input_shape=(3, 8, 8))
    assert all(u.canonical is None for u in net.units)
    assert [u.kind for u in net.units] == ["regular", "regular", "downsampling", "regular"]
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    assert lin.unit(1, 1).materialize().shape == (256, 256)

    class PreAct(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

        def forward(self, x):
            out = F.relu(self.bn1(x))
            skip = self.shortcut(out)
            return self.conv2(F.relu(self.bn2(self.conv1(out)))) + skip

    model = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.Sequential(PreAct(4, 8, 2), PreAct(8, 8)))
    net = linstab.Network(randomize_bn(model, 1).eval(), input_shape=(3, 8, 8))
    assert [u.canonical for u in net.units] == [None, None]
    assert net.linearize(tiny_image()).unit(1, 1).shape == (128, 256)


def test_normalization_is_checked():
    """mean/std of the wrong length (a RuntimeError deep in discovery before), a zero or negative
    std (NaN logits before) and non-numbers are refused when the Network is built."""
    torch.manual_seed(0)
    model = randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), 0).eval()
    for mean, std, err, match in [
        ((0.5,) * 4, (0.25,) * 4, ValueError, "one value per input channel \\(3\\)"),
        ((0.5,) * 3, (0.0,) * 3, ValueError, "std positive"),
        ((0.5,) * 3, (-1.0,) * 3, ValueError, "std positive"),
        ("abc", "def", TypeError, "sequences of numbers"),
    ]:
        with pytest.raises(err, match=match):
            linstab.Network(model, mean, std, input_shape=(3, 8, 8))
    net = linstab.Network(model, (0.5,), (0.25,), input_shape=(3, 8, 8))
    assert torch.isfinite(net.predict(tiny_image())).all()


def test_blocks_that_change_their_input_in_place_are_linearized_at_the_true_input():
    """``x += out`` inside a block overwrites the tensor the hooks saw: the point of the
    linearization must still be the input before the block (recorded copies), and an autodiff
    Jacobian that autograd cannot build says why instead of failing deep in torch."""

    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            x += self.c(x)
            return torch.relu(x)

    class Clean(InPlace):
        def forward(self, x):
            return torch.relu(x + self.c(x))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), InPlace(), InPlace()).eval().double()
    clean = copy.deepcopy(model)
    for i in (1, 2):
        c = Clean().double().eval()
        c.load_state_dict(model[i].state_dict())
        clean[i] = c
    x = tiny_image().double()
    net = linstab.Network(model, input_shape=(3, 8, 8), unit_types=(InPlace,))
    ref = linstab.Network(clean, input_shape=(3, 8, 8), unit_types=(Clean,))
    lin, lin_ref = net.linearize(x, dtype=torch.float64), ref.linearize(x, dtype=torch.float64)
    assert torch.equal(net.predict(x), ref.predict(x))
    for k in (1, 2):
        assert torch.equal(lin.inputs[k - 1], lin_ref.inputs[k - 1])
        assert torch.equal(lin.outputs[k - 1], lin_ref.outputs[k - 1])
        with pytest.raises(ValueError, match="out of place"):
            lin.unit(1, k)


class _PreActBlock(torch.nn.Module):
    """kuangliu's PreActBlock: ``shortcut`` exists only where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = torch.nn.BatchNorm2d(cin)
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        sc = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + sc


def test_every_instance_of_a_recognized_block_class_is_a_unit():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), _PreActBlock(4, 4), _PreActBlock(4, 4), _PreActBlock(4, 8, 2)
    )
    randomize_bn(model, 0)
    model = model.eval().double()
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert len(net.units) == 3
    # unrecognized (no closed form): same-shape units are regular, the last one down-samples
    assert [(u.kind, u.shortcut) for u in net.units] == [
        ("regular", "unknown"),
        ("regular", "unknown"),
        ("downsampling", "unknown"),
    ]
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    from factories import dense_jacobian

    for i, u in enumerate(net.units):
        D = dense_jacobian(model[i + 1], lin.inputs[i][0])
        J = lin.unit(u.stage, u.index).materialize()
        assert float((J - D).norm() / D.norm()) < 1e-10, u.address


def test_unit_addresses_must_be_ints():
    net = make_net("option-A")
    for bad in [("1", 1), (1.0, 1), (1, True)]:
        with pytest.raises(TypeError, match="must be an int"):
            net.unit(*bad)
    with pytest.raises(ValueError, match=r"does not run on images of input_shape \(1, 8, 8\).*3 channels"):
        linstab.Network(net.model, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="expected images of shape"):
        net.linearize(tiny_image(hw=16))


def test_a_model_put_back_in_training_mode_is_refused_at_every_use_and_left_unchanged():
    net = make_net("option-B")
    x = tiny_image()
    lin = net.linearize(x)
    net.model.train()
    try:
        state = copy.deepcopy(net.model.state_dict())
        for call in (
            lambda: net.predict(x),
            lambda: net.linearize(x),
            lambda: lin.unit(1, 1, method="autodiff"),
        ):
            with pytest.raises(ValueError, match="training mode"):
                call()
        after = net.model.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)  # no batch statistics updated
        assert lin.unit(1, 1, method="closed") is not None  # linstab's own twin, taken in eval mode
    finally:
        net.model.eval()


def test_unit_types_and_unit_addresses_are_checked_and_numpy_ints_accepted():
    import numpy as np

    net = make_net("tv-basic")
    one = linstab.Network(net.model, input_shape=(3, 8, 8), unit_types=TVBasicBlock)  # a class alone
    assert len(one.units) == len(net.units)
    with pytest.raises(TypeError, match="torch.nn.Module subclasses"):
        linstab.Network(net.model, input_shape=(3, 8, 8), unit_types=(int,))
    with pytest.raises(TypeError, match="tuple of module classes"):
        linstab.Network(net.model, input_shape=(3, 8, 8), unit_types=3)
    assert net.unit(np.int64(1), np.int32(2)) is net.unit(1, 2)


def test_a_data_parallel_wrapper_is_analysed_as_the_model_inside():
    """nn.DataParallel only replicates its model; torch's functional calls refuse it, so the
    float64 forward pass of linearize failed on a wrapped model."""
    model = AkaResNet(2, (4, 8))
    randomize_bn(model, 0)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    net = linstab.Network(torch.nn.DataParallel(model), input_shape=(3, 8, 8))
    plain = linstab.Network(model, input_shape=(3, 8, 8))
    assert net.model is model and net.name == "AkaResNet"
    assert [u.name for u in net.units] == [u.name for u in plain.units]
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    ref = plain.linearize(tiny_image(), dtype=torch.float64)
    assert torch.equal(lin.logits, ref.logits)
    assert torch.equal(lin.unit(2, 1).materialize(), ref.unit(2, 1).materialize())
    assert torch.equal(net.predict(tiny_image()), plain.predict(tiny_image()))
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


def test_a_block_with_relu6_is_not_given_a_relu_twin():
    """A torchvision-style block with ``ReLU6`` passed the twin's output check at the discovery
    image (no activation reached 6 there) and got a ReLU closed form: at an image whose
    activations pass 6, ``lin.unit`` raised instead of taking the autodiff Jacobian."""
    from factories import dense_jacobian

    class Block6(TVBasicBlock):
        def __init__(self, c):
            super().__init__(c, c)
            self.relu = torch.nn.ReLU6(inplace=True)

    torch.manual_seed(0)
    stem = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():  # about 10 on white pixels, negative on the discovery image's
        stem.weight.fill_(1e4)
        stem.bias.fill_(-3e4 + 10)
    model = randomize_bn(torch.nn.Sequential(stem, torch.nn.Sequential(Block6(4), Block6(4))), 0)
    net = linstab.Network(model.double().eval(), input_shape=(3, 8, 8))
    assert [u.canonical for u in net.units] == [None, None]
    lin = net.linearize(torch.ones(3, 8, 8), dtype=torch.float64)
    assert float(lin.inputs[0].max()) > 6
    for i, u in enumerate(net.units):
        D = dense_jacobian(u.module, lin.inputs[i][0])
        assert torch.allclose(lin.unit(u.stage, u.index).materialize(), D, atol=1e-12)
