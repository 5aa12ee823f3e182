"""Recognize residual units of common code bases and convert them to :class:`ResidualUnit`.

Recognized (by attributes, so forks of these code bases work too):

* linstab / pytorchcv ``ResUnit``: ``body.conv1..convL`` blocks with ``conv``/``bn``/``activ``,
  optional ``identity_conv``, ``activ``;
* akamaster ``BasicBlock``: ``conv1, bn1, conv2, bn2, shortcut`` (``shortcut`` an empty
  ``Sequential`` = identity, ``Sequential(conv, bn)`` = option B, or a parameter-free module
  checked numerically to be option A's subsample-and-pad);
* torchvision ``BasicBlock`` (``conv1, bn1, conv2, bn2, downsample``) and ``Bottleneck``
  (``conv1..conv3, bn1..bn3, downsample``).

akamaster and torchvision forms use ReLU: a block holding another activation module (``ReLU6``,
``LeakyReLU``, ...) is a unit without a closed form (autodiff Jacobian).

The converted unit is a *copy* (the user's module is never changed) and is checked to
reproduce the original's output before the closed-form Jacobian uses it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils import parametrize

from .blocks import ConvBlock, ResidualUnit, SubsamplePad

RELU_TYPES = (nn.ReLU,)


def _conv_block(conv: nn.Module, bn: nn.Module | None, activ: nn.Module | None) -> ConvBlock:
    blk = ConvBlock.__new__(ConvBlock)
    nn.Module.__init__(blk)
    blk.conv = _copy_layer(conv)
    blk.bn = _copy_layer(bn) if bn is not None else nn.Identity()
    if activ is not None:
        blk.activ = _copy_activation(activ)
    return blk


def _copy_layer(layer: nn.Module) -> nn.Module:
    """A copy of a layer; a parametrized convolution (``weight_norm``, ``spectral_norm``, ...) as
    a plain ``Conv2d`` holding the parametrized tensors computed in float64, as the functional
    forward passes in float64 compute them (computed in float32 and cast, they would differ by
    float32 round-off). ``remove_parametrizations`` is not used: it edits the parametrized
    class, which the copy shares with the user's layer.
    """
    new = copy.deepcopy(layer)
    if not (parametrize.is_parametrized(new) and isinstance(new, nn.Conv2d)):
        return new
    new.double()
    with torch.no_grad():
        weight, bias = new.weight.detach().clone(), None if new.bias is None else new.bias.detach().clone()
    plain = nn.Conv2d(
        new.in_channels,
        new.out_channels,
        new.kernel_size,
        new.stride,
        new.padding,
        new.dilation,
        new.groups,
        bias=bias is not None,
        padding_mode=new.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    plain.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        plain.bias = nn.Parameter(bias, requires_grad=False)
    return plain


def _copy_activation(act: nn.Module) -> nn.Module:
    """A copy of an activation that never works in place (``nn.LeakyReLU(inplace=True)``,
    ``nn.SiLU(inplace=True)``, ...): the closed form applies it to pre-activations it keeps.
    """
    if isinstance(act, nn.ReLU):
        return nn.ReLU()  # never in-place in linstab's copies
    new = copy.deepcopy(act)
    if getattr(new, "inplace", False) is True:
        new.inplace = False
    return new


def _is_pytorchcv_like(m: nn.Module) -> bool:
    body = getattr(m, "body", None)
    return (
        isinstance(body, nn.Module)
        and hasattr(body, "conv1")
        and hasattr(body.conv1, "conv")
        and hasattr(m, "activ")
    )


def _is_conv_bn_unit(m: nn.Module) -> bool:
    return all(isinstance(getattr(m, a, None), nn.Module) for a in ("conv1", "bn1", "conv2", "bn2"))


def _other_activation(m: nn.Module) -> bool:
    """True when a torchvision/akamaster-style unit holds an activation module other than ReLU
    (``ReLU6``, ``LeakyReLU``, ...): its twin would use ReLU, and the check of the twin's output
    at one point cannot tell ``ReLU6`` from ``ReLU`` where no activation reaches 6.
    """
    return any(type(c).__module__ == nn.ReLU.__module__ and not isinstance(c, nn.ReLU) for c in m.children())


def is_residual_unit(m: nn.Module) -> bool:
    """True for modules linstab recognizes as residual units (see the module docstring)."""
    if isinstance(m, ResidualUnit):
        return True
    if _is_pytorchcv_like(m):
        return True
    return _is_conv_bn_unit(m) and (hasattr(m, "shortcut") or hasattr(m, "downsample"))


def _shortcut_from_sequential(sc: nn.Module) -> nn.Module | None | str:
    """``None`` for identity, a ConvBlock for conv+bn, ``"other"`` otherwise."""
    if sc is None or isinstance(sc, nn.Identity):
        return None
    if isinstance(sc, nn.Sequential):
        kids = list(sc.children())
        if not kids:
            return None
        if len(kids) == 2 and isinstance(kids[0], nn.Conv2d) and isinstance(kids[1], nn.BatchNorm2d):
            return _conv_block(kids[0], kids[1], None)
        if len(kids) == 1 and isinstance(kids[0], nn.Conv2d):
            return _conv_block(kids[0], None, None)
    if hasattr(sc, "conv") and isinstance(sc.conv, nn.Conv2d) and getattr(sc, "activ", None) is None:
        return _conv_block(sc.conv, getattr(sc, "bn", None), None)
    return "other"


def _detect_subsample_pad(
    sc: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> SubsamplePad | None:
    """Check numerically whether a parameter-free shortcut is subsample + channel padding."""
    if any(True for _ in sc.parameters()):
        return None
    c_in, h_in, _ = in_shape
    c_out, h_out, _ = out_shape
    if h_out == 0 or h_in % h_out != 0 or c_out < c_in:
        return None
    stride = h_in // h_out
    extra = c_out - c_in
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, *in_shape), generator=g, dtype=torch.float64)
    with torch.no_grad():
        try:
            y = sc(x)
        except Exception:  # noqa: BLE001 - any failure means "not recognized"
            return None
    for front in sorted({extra // 2, extra - extra // 2, 0, extra}):
        cand = SubsamplePad(front, extra - front, stride)
        with torch.no_grad():
            if y.shape == cand(x).shape and torch.equal(y, cand(x)):
                return cand
    return None


def to_residual_unit(
    m: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> ResidualUnit | None:
    """A :class:`ResidualUnit` copy of a recognized unit, or ``None`` if its form is unknown.

    Args:
        m: the unit module.
        in_shape: its input map shape ``(C, H, W)``.
        out_shape: its output map shape.
    """
    if isinstance(m, ResidualUnit):
        return m
    unit = _convert(m, in_shape, out_shape)
    if unit is not None:
        unit.train(m.training)  # the copy (linstab's own object) mirrors the source's mode
    return unit


def _convert(m: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> ResidualUnit | None:
    if _is_pytorchcv_like(m):
        blocks = OrderedDict()
        i = 1
        while hasattr(m.body, f"conv{i}"):
            b = getattr(m.body, f"conv{i}")
            blocks[f"conv{i}"] = _conv_block(b.conv, getattr(b, "bn", None), getattr(b, "activ", None))
            i += 1
        resize = getattr(m, "resize_identity", hasattr(m, "identity_conv"))
        sc = _shortcut_from_sequential(m.identity_conv) if resize else None
        if sc == "other":
            return None
        return ResidualUnit(nn.Sequential(blocks), sc, _copy_activation(m.activ))
    if _is_conv_bn_unit(m):
        if _other_activation(m):
            return None
        relu = nn.ReLU()
        blocks = OrderedDict()
        n = 3 if isinstance(getattr(m, "conv3", None), nn.Module) else 2
        for i in range(1, n + 1):
            act = relu if i < n else None
            blocks[f"conv{i}"] = _conv_block(getattr(m, f"conv{i}"), getattr(m, f"bn{i}"), act)
        raw = getattr(m, "downsample", None) if hasattr(m, "downsample") else m.shortcut
        sc = _shortcut_from_sequential(raw)
        if sc == "other":
            sc = _detect_subsample_pad(raw, in_shape, out_shape)
            if sc is None:
                return None
        return ResidualUnit(nn.Sequential(blocks), sc, nn.ReLU())
    return None
