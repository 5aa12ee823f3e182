"""Which nonlinearities a unit applies to its input (:mod:`linstab.analyses.piecewise`), and the
Taylor test's verdicts on units of kinds no ResNet of the paper has (GroupNorm, gates, products)."""

from __future__ import annotations

import pytest
import torch
from factories import NET_KINDS, make_net, tiny_image
from torch import nn

import linstab
from linstab.analyses.piecewise import OpRecorder
from linstab.analyses.taylor import jacobian_test


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One torch thread (shared fixture in conftest)."""


def _record(fn, x: torch.Tensor) -> OpRecorder:
    with OpRecorder(x) as rec:
        fn(x)
    return rec


@pytest.mark.parametrize("kind", [k for k in NET_KINDS if k != "pytorchcv"])
def test_every_resnet_unit_kind_is_relu_and_piecewise_linear(kind):
    net = make_net(kind, seed=1)
    x = tiny_image(0).unsqueeze(0)
    with torch.no_grad():
        for u in net.units:
            rec = _record(lambda z, m=u.module: m(z), torch.relu(torch.randn((1, *u.in_shape))))
            assert rec.names == ["relu"] and rec.piecewise_linear, (u.address, rec.names)
        rec = _record(net.module, x)  # the whole network: pooling, flatten, linear head as well
    assert rec.names == ["relu"] and rec.piecewise_linear


@pytest.mark.parametrize(
    ("fn", "names", "piecewise"),
    [
        (lambda x: x * x, ["mul(x, x)"], False),
        (lambda x: x * 2.0 - x / 3 + x.mean(), [], True),  # linear
        (lambda x: x @ x.transpose(-1, -2), ["matmul(x, x)"], False),
        (lambda x: x / (1 + x.abs()), ["div(., x)"], False),
        (lambda x: 1 / (1 + x.abs()), ["rdiv(., x)"], False),
        (lambda x: x**1 + x.pow(1.0), [], True),
        (lambda x: x**2, ["pow"], False),
        (lambda x: torch.square(x), ["pow"], False),
        (lambda x: x * torch.sigmoid(x.mean((2, 3), keepdim=True)), ["sigmoid", "mul(x, x)"], False),
        (lambda x: nn.functional.group_norm(x, 2).relu(), ["group_norm", "relu"], False),
        (lambda x: torch.softmax(x.flatten(1), 1), ["softmax"], False),
        (lambda x: torch.lgamma(x.abs() + 1), ["lgamma?"], False),
        (lambda x: nn.functional.max_pool2d(x, 2).clamp(min=0).abs(), [], True),
        (lambda x: torch.where(x > 0, x, 0.1 * x), [], True),
        (lambda x: nn.functional.leaky_relu(x) + nn.functional.relu6(x), ["leaky_relu", "relu6"], True),
        (lambda x: nn.functional.batch_norm(x, None, None, training=True), ["batch_norm(training)"], False),
        # in-place ops are named without their trailing underscore (they were labelled "copy?")
        (lambda x: torch.empty_like(x).copy_(x.relu()).requires_grad_(False), ["relu"], True),
        (lambda x: x.clone().zero_() + x.clone().fill_(1.0) + x, [], True),
    ],
)
def test_ops_on_the_input_are_classified(fn, names, piecewise):
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    rec = _record(fn, x)
    assert rec.names == names and rec.piecewise_linear == piecewise


def test_ops_on_weights_alone_and_in_place_writes_are_followed():
    w = torch.randn(4, 4)
    x = torch.randn(4, 4)

    def fn(z):
        scale = torch.exp(w) / w.norm()  # weights only: not the input's nonlinearity
        buf = torch.zeros(4, 4)
        buf[:2] = z[:2]  # buf now depends on z
        return scale * buf * buf  # a product of two input-dependent tensors

    rec = _record(fn, x)
    assert rec.names == ["mul(x, x)"] and not rec.piecewise_linear
    assert not _record(lambda z: w.exp(), x).seen  # nothing was applied to the input


class _Unit(nn.Module):
    """``relu(x + R(x))`` with a choice of residual branch (4 channels)."""

    def __init__(self, branch: str):
        super().__init__()
        self.branch = branch
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if self.branch == "groupnorm":
            r = self.conv2(torch.relu(self.norm(self.conv1(x))))
        elif self.branch == "se":
            r = self.conv2(torch.relu(self.conv1(x)))
            r = r * torch.sigmoid(self.fc(r.mean((2, 3))))[:, :, None, None]
        elif self.branch == "square":
            r = 0.1 * self.conv1(x) * self.conv2(x)
        else:  # linear: no activation in the branch
            r = self.conv2(self.conv1(x))
        return torch.relu(x + r) if self.branch != "linear" else x + 0.1 * r


def _net(branch: str) -> linstab.Network:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Unit(branch), _Unit(branch)).eval()
    return linstab.Network(model, input_shape=(3, 8, 8), unit_types=(_Unit,), name=branch)


@pytest.mark.parametrize(
    ("branch", "label"),
    [
        ("groupnorm", "as-is (group_norm, relu)"),
        ("se", "as-is (relu, sigmoid, mul(x, x))"),
        ("square", "as-is (mul(x, x), relu)"),
    ],
)
def test_smooth_units_beside_relu_are_not_called_exact(branch, label):
    """A GroupNorm, gated or quadratic unit with ReLUs was taken as piecewise linear (only the
    activations were looked at): its order is measured instead, and it is second order."""
    r = jacobian_test(_net(branch), tiny_image(), 1, 1)
    assert r.activation == label and not r.piecewise_linear
    assert r.exact_below_eps is None
    assert r.order >= 1.9 and r.passed, r.table()  # ReLUs crossing at the largest eps may steepen it


def test_a_linear_unit_is_exact_at_every_eps():
    r = jacobian_test(_net("linear"), tiny_image(), 1, 2)
    assert r.activation == "as-is (none found)" and r.piecewise_linear
    assert r.exact_below_eps == r.eps[0] and r.passed, r.table()
