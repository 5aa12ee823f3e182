"""Seeded factories of tiny residual networks of every unit kind, shared by the tests.

Each factory returns a model in eval mode with randomized (non-trivial) BN statistics, and the
:class:`linstab.Network` over it. Ids are readable (``option-A``, ``tv-bottleneck``, ...).
Import with ``from factories import make_net`` (``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import linstab
from linstab.models import CifarResNet, ConvBlock, ResidualUnit
from linstab.models.imagenet import randomize_batchnorm
from linstab.operators import CallableOperator, DenseOperator, UnitJacobian
from linstab.spectra import count_from_values

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def weights_dir() -> Path | None:
    env = os.environ.get("LINSTAB_WEIGHTS_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    return None


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (the library's
    :func:`~linstab.models.imagenet.randomize_batchnorm`, same draws)."""
    return randomize_batchnorm(model, seed)


# ---- torchvision-style blocks (same attribute names as torchvision.models.resnet) -----------
class TVBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVResNet(nn.Module):
    """A small torchvision-style ResNet (conv1/bn1/relu/maxpool, layer1..layerK, avgpool, fc)."""

    def __init__(self, block, layers=(2, 2), widths=(4, 8), num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, n, stride):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        k = 1
        while hasattr(self, f"layer{k}"):
            x = getattr(self, f"layer{k}")(x)
            k += 1
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- akamaster-style block (F.relu in forward, LambdaLayer option-A shortcut) ----------------
class LambdaLayer(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class AkaBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class AkaResNet(nn.Module):
    def __init__(self, n: int = 2, widths=(4, 8)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for u in range(n):
                blocks.append(AkaBasicBlock(cin, w, 2 if (u == 0 and i > 0) else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.nstages = len(widths)
        self.linear = nn.Linear(cin, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.nstages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class TinyCifarResNet(CifarResNet):
    """linstab's CifarResNet with narrow stages (for fast tests)."""

    def __init__(self, shortcut: str, n: int = 2, widths=(4, 8, 16)) -> None:
        super().__init__(6 * n + 2, shortcut, 10, widths)


def _finish(model: nn.Module, seed: int, name: str, hw: int = 8) -> linstab.Network:
    randomize_bn(model, seed)
    model.eval()
    return linstab.Network(model, name=name, input_shape=(3, hw, hw))


def make_net(kind: str, seed: int = 0, dtype=torch.float32, units: int = 2, hw: int = 8) -> linstab.Network:
    """A tiny seeded network of one unit kind (``hw x hw`` inputs, default 8; 32 for the default
    images); ``units`` per stage for the option-A/B CIFAR ResNets."""
    torch.manual_seed(seed)
    if kind == "option-A":
        model = TinyCifarResNet("A", units)
    elif kind == "option-B":
        model = TinyCifarResNet("B", units)
    elif kind == "tv-basic":
        model = TVResNet(TVBasicBlock, (2, 2), (4, 8))
    elif kind == "tv-bottleneck":
        model = TVResNet(TVBottleneck, (2, 2), (2, 4))
    elif kind == "akamaster":
        model = AkaResNet(2, (4, 8))
    elif kind == "pytorchcv":
        from pytorchcv.models.resnet_cifar import CIFARResNet as CVResNet

        model = CVResNet([[4, 4], [8, 8], [16, 16]], 4, False, in_size=(8, 8))
        model.features.final_pool = nn.AdaptiveAvgPool2d(1)
    else:
        raise ValueError(kind)
    return _finish(model.to(dtype), seed, kind, hw)


def make_gray_net(seed: int = 0, hw: int = 8, channels: int = 1) -> linstab.Network:
    """A tiny seeded option-B CIFAR ResNet whose stem takes ``channels`` input channels
    (1: grayscale), normalized with per-channel mean/std of that length."""
    torch.manual_seed(seed)
    model = TinyCifarResNet("B", 2)
    model.features.init_block = ConvBlock(channels, 4, 3, 1, 1, activation=nn.ReLU())
    randomize_bn(model, seed)
    model.eval()
    mean, std = (0.5,) * channels, (0.25,) * channels
    return linstab.Network(model, mean, std, name=f"gray{channels}", input_shape=(channels, hw, hw))


NET_KINDS = ["option-A", "option-B", "tv-basic", "tv-bottleneck", "akamaster", "pytorchcv"]


def tiny_image(seed: int = 0, hw: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((3, hw, hw), generator=g)


# dense float64 twins and hand-made units for the spectral tests
F64 = torch.float64


def dense(op) -> torch.Tensor:
    return op.materialize(dtype=F64)


def dense_sv(op) -> torch.Tensor:
    """The singular values of ``op``'s dense float64 matrix (LAPACK). A rectangular matrix is
    first reduced to the triangular factor of the QR of its tall orientation (same singular
    values; LAPACK's SVD of a 4096 x 8192 unit takes twice as long as QR + SVD of R)."""
    M = dense(op)
    if M.shape[0] != M.shape[1]:
        M = torch.linalg.qr(M if M.shape[0] > M.shape[1] else M.T, mode="r").R
    return torch.linalg.svdvals(M)


def dense_counts(s: torch.Tensor, n: int, lo=0.99, hi=1.01, zt=1e-6) -> tuple[int, int, int, int]:
    return count_from_values(s, n, lo, hi, zt)


def n_alpha(s: torch.Tensor, alpha: float = 1.0) -> int:
    return int(((s - abs(alpha)).abs() < 1e-9).sum())


def make_unit(**kwargs) -> UnitJacobian:
    """The Jacobian (float64) of :func:`make_unit_module`'s unit at its input (same arguments)."""
    unit, x = make_unit_module(**kwargs)
    return UnitJacobian(unit, x, F64)


def make_unit_module(
    alpha: float = 1.0,
    act=nn.ReLU,
    c: int = 4,
    hw: int = 6,
    shift: float = -0.4,
    seed: int = 0,
    dependent: bool = False,
) -> tuple[ResidualUnit, torch.Tensor]:
    """A regular BasicBlock unit whose first BN is shifted down (few active inner units), float64,
    eval mode, and its input ``(1, c, hw, hw)``; ``dependent``: two inner channels feed conv2
    proportionally, so that the reduction's ``Q`` is rank deficient.
    """
    torch.manual_seed(seed)
    body = nn.Sequential(
        OrderedDict(conv1=ConvBlock(c, c, 3, 1, 1, activation=act()), conv2=ConvBlock(c, c, 3, 1, 1))
    )
    unit = ResidualUnit(body, None, act(), alpha=alpha)
    randomize_bn(unit, seed)
    with torch.no_grad():
        unit.body.conv1.bn.bias.add_(shift)
        if dependent:  # inner channels 0 and 1 feed conv2 proportionally: Q loses rank
            unit.body.conv2.conv.weight[:, 1] = 2 * unit.body.conv2.conv.weight[:, 0]
    unit = unit.to(F64).eval()
    g = torch.Generator().manual_seed(seed + 1)
    return unit, torch.rand((1, c, hw, hw), generator=g, dtype=F64)


def all_nets() -> dict[str, linstab.Network]:
    """One seeded tiny network of every kind (pytorchcv's only where it is installed)."""
    out = {}
    for kind in NET_KINDS:
        if kind == "pytorchcv":
            try:
                import pytorchcv  # noqa: F401
            except ImportError:
                continue
        out[kind] = make_net(kind, seed=NET_KINDS.index(kind))
    return out


# ---- dense twins for the matrix-free estimators: operators with planted singular values ----
def orthonormal(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``(n, k)`` orthonormal columns (QR of a Gaussian matrix)."""
    Q, R = torch.linalg.qr(torch.randn((n, k), generator=g, dtype=F64))
    return Q * torch.sign(torch.diagonal(R))[None, :]


def planted(
    values, n_out: int, n_in: int | None = None, active: int | None = None, seed: int = 0, dtype=F64
) -> tuple[DenseOperator, torch.Tensor, torch.Tensor]:
    """``J`` with the given singular values on ``active`` random rows, zero rows elsewhere.

    Args:
        values: the ``min(active, n_in)`` singular values of the active rows.
        n_out, n_in: shape (``n_in`` defaults to ``n_out``).
        active: number of nonzero-able rows (default ``n_out``).
        seed: seed of the rotations and of the row choice.
        dtype: dtype of the operator.

    Returns:
        ``(op, active_rows, s)``: the operator, the boolean ``(n_out,)`` row mask and all
        ``min(n_out, n_in)`` singular values (float64, descending), structural zeros included.
    """
    n_in = n_out if n_in is None else n_in
    m = n_out if active is None else active
    vals = torch.as_tensor(values, dtype=F64)
    r = min(m, n_in)
    if vals.numel() != r:
        raise ValueError(f"need {r} values, got {vals.numel()}")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n_out, generator=g)[:m]
    mask = torch.zeros(n_out, dtype=torch.bool)
    mask[rows] = True
    U = orthonormal(m, r, g)
    V = orthonormal(n_in, r, g)
    J = torch.zeros((n_out, n_in), dtype=F64)
    J[mask] = U @ torch.diag(vals) @ V.T
    n = min(n_out, n_in)
    s = torch.sort(torch.cat([vals, torch.zeros(n - r, dtype=F64)]), descending=True).values
    return DenseOperator(J.to(dtype)), mask, s


def levels(counts: dict[float, int]) -> torch.Tensor:
    """Values with multiplicities, e.g. ``{1.0: 40, 0.5: 10}``."""
    return torch.cat([torch.full((c,), float(v), dtype=F64) for v, c in counts.items()])


def band_counts(s: torch.Tensor, lo=0.99, hi=1.01, zt=1e-6) -> dict[str, int]:
    """Exact band counts of singular values ``s`` (the paper's conventions)."""
    s = s.to(F64)
    above = int((s > hi).sum())
    plateau = int(((s >= lo) & (s <= hi)).sum())
    below = int(((s > zt) & (s < lo)).sum())
    return {"above": above, "plateau": plateau, "below": below, "zero": s.numel() - above - plateau - below}


def gram_eig(op, side: str = "right", support: torch.Tensor | None = None):
    """Eigenpairs of the dense Gram (``J^T J`` or ``J J^T``), restricted to ``support``."""
    J = op.materialize(dtype=F64)
    A = J.T @ J if side == "right" else J @ J.T
    if support is not None:
        A = A[support][:, support]
    return torch.linalg.eigh(A)


def nan_operator(n: int = 20, dtype=F64) -> CallableOperator:
    """An operator whose forward product returns NaN."""

    def mm(V):
        return torch.full_like(V, float("nan"))

    return CallableOperator(mm, lambda W: W.clone(), (n,), (n,), dtype)


def dense_jacobian(module, x: torch.Tensor, forward: bool = False) -> torch.Tensor:
    """torch.func Jacobian ``(n_out, n_in)`` of a module at ``x`` (float64 copy of the state)."""
    state = {
        k: v.detach().double() if v.is_floating_point() else v
        for k, v in list(module.named_parameters()) + list(module.named_buffers())
    }

    def f(z):
        return torch.func.functional_call(module, state, (z.unsqueeze(0),))[0]

    jac = (torch.func.jacfwd if forward else torch.func.jacrev)(f)(x.double())
    n_in = x.numel()
    return jac.reshape(-1, n_in)


class TanhUnit(torch.nn.Module):
    """A unit linstab does not recognize (``tanh(x + conv(x))``, 4 channels): for ``unit_types=``."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return torch.tanh(x + self.c(x))
