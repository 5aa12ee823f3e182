"""Networks users bring themselves: unit order, shared and unused blocks, weights changed after
wrapping, low-precision and parametrized models, compiled models and odd outputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from factories import TVBasicBlock, TVResNet, dense_jacobian, randomize_bn, tiny_image
from torch import nn

import linstab

F64 = torch.float64


def _tv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(TVResNet(TVBasicBlock, (2, 2), (4, 8)), seed).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _assert_units_exact(net: linstab.Network, image: torch.Tensor, closed: bool = True) -> None:
    """Every unit's operator (closed form when ``closed``) equals ``jacrev`` of the unit's own forward."""
    lin = net.linearize(image, dtype=F64)
    for i, u in enumerate(net.units):
        assert (u.canonical is not None) == closed, u.address
        D = lin.unit(u.stage, u.index).materialize()
        assert _rel(D, dense_jacobian(u.module, lin.inputs[i][0])) < 1e-12, u.address


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)

    def forward(self, x):
        return F.relu(self.conv(x))


def test_units_follow_the_forward_pass_not_the_definition_order():
    """Stages defined in reverse order in ``__init__`` were numbered in definition order, so
    unit 1.1 was the down-sampling unit and ``lin.network()`` refused the 'unchained' units."""

    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = _Stem()
            self.layer2 = nn.Sequential(TVBasicBlock(4, 8, 2, _down(4, 8)), TVBasicBlock(8, 8))
            self.layer1 = nn.Sequential(TVBasicBlock(4, 4), TVBasicBlock(4, 4))
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))

    net = linstab.Network(randomize_bn(Reversed(), 0).eval(), input_shape=(3, 8, 8))
    assert [(u.address, u.name) for u in net.units] == [
        ("1.1", "layer1.0"),
        ("1.2", "layer1.1"),
        ("2.1", "layer2.0"),
        ("2.2", "layer2.1"),
    ]
    assert net.unit(2, 1).kind == "downsampling"
    assert net.linearize(tiny_image()).network().shape == (8 * 4 * 4, 4 * 8 * 8)


def _down(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))


def test_a_block_applied_twice_is_refused_and_an_unused_one_is_skipped():
    """A block run three times (shared weights) was one unit linearized at its first input:
    ``lin.network()`` was silently wrong (relative error 0.8). A block the forward pass never
    runs made the whole model unusable ("1 discovered units were not run")."""

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.block, self.fc = _Stem(), TVBasicBlock(4, 4), nn.Linear(4, 10)

        def forward(self, x):
            x = self.stem(x)
            for _ in range(3):
                x = self.block(x)
            return self.fc(x.mean((2, 3)))

    with pytest.raises(ValueError, match=r"more than once.*block \(3 times\)"):
        linstab.Network(randomize_bn(Shared(), 0).eval(), input_shape=(3, 8, 8))

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.fc = _Stem(), nn.Linear(4, 10)
            self.layer1 = nn.Sequential(TVBasicBlock(4, 4), TVBasicBlock(4, 4))
            self.aux = TVBasicBlock(4, 4)

        def forward(self, x):
            return self.fc(self.layer1(self.stem(x)).mean((2, 3)))

    with pytest.warns(UserWarning, match="not run by its forward pass.*aux"):
        net = linstab.Network(randomize_bn(Unused(), 0).eval(), input_shape=(3, 8, 8))
    assert [u.name for u in net.units] == ["layer1.0", "layer1.1"]
    net.linearize(tiny_image()).network()


class _CallUnit(nn.Module):
    """``relu(x + scale * conv(x))``; how the network calls it is set by ``call``."""

    def __init__(self, call: str) -> None:
        super().__init__()
        self.call, self.conv = call, nn.Conv2d(4, 4, 3, 1, 1)

    def forward(self, x, scale=1.0, mask=None):
        y = F.relu(x + scale * self.conv(x) * (1 if mask is None else mask))
        return (y, y.mean()) if self.call == "tuple" else y


class _CallNet(nn.Module):
    def __init__(self, call: str) -> None:
        super().__init__()
        self.call, self.stem, self.fc = call, _Stem(), nn.Linear(4, 10)
        self.layer1 = nn.ModuleList([_CallUnit(call), _CallUnit(call)])

    def forward(self, x):
        x = self.stem(x)
        for u in self.layer1:
            if self.call == "kwarg":
                x = u(x, scale=0.5)
            elif self.call == "positional":
                x = u(x, 0.5)
            elif self.call == "tensor":
                x = u(x, mask=(x > 0.1).to(x.dtype))
            elif self.call == "tuple":
                x = u(x)[0]
            else:
                x = u(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ("kwarg", r"called with more than their input tensor: layer1\.0 \(scale=\)"),
        ("positional", r"called with more than their input tensor: layer1\.0 \(float\)"),
        ("tensor", r"called with more than their input tensor: layer1\.0 \(mask=\)"),
        ("tuple", r"do not return one tensor: layer1\.0 \(tuple\)"),
    ],
)
def test_units_called_with_extra_arguments_or_returning_tuples_are_refused(call, match):
    """A unit called as ``unit(x, scale=0.5)`` was linearized as ``unit(x)`` (its default
    ``scale=1``): a silently wrong Jacobian (relative error 0.33). A unit returning a tuple failed
    with "'tuple' object has no attribute 'detach'"."""
    torch.manual_seed(0)
    model = _CallNet(call).eval()
    with pytest.raises(ValueError, match=match):
        linstab.Network(model, input_shape=(3, 8, 8), unit_types=(_CallUnit,))
    model.call = "plain"  # the same units called with their input alone: fine
    for u in model.layer1:
        u.call = "plain"
    _assert_units_exact(linstab.Network(model, input_shape=(3, 8, 8), unit_types=(_CallUnit,)), tiny_image(),
                        closed=False)  # fmt: skip


def test_units_held_by_one_module_are_split_into_stages_at_down_sampling():
    """Units held directly by the model (no stage containers) were one stage across the
    down-sampling unit; a model that is itself one block said only "no residual units found"."""

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.fc = _Stem(), nn.Linear(8, 10)
            self.b1, self.b2 = TVBasicBlock(4, 4), TVBasicBlock(4, 4)
            down = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))
            self.b3, self.b4 = TVBasicBlock(4, 8, stride=2, downsample=down), TVBasicBlock(8, 8)

        def forward(self, x):
            x = self.b4(self.b3(self.b2(self.b1(self.stem(x)))))
            return self.fc(x.mean((2, 3)))

    net = linstab.Network(randomize_bn(Flat(), 0).eval(), input_shape=(3, 8, 8))
    assert [(u.address, u.name, u.kind) for u in net.units] == [
        ("1.1", "b1", "regular"),
        ("1.2", "b2", "regular"),
        ("2.1", "b3", "downsampling"),
        ("2.2", "b4", "regular"),
    ]
    net.linearize(tiny_image()).stage(2)
    with pytest.raises(ValueError, match=r"is itself one residual unit.*nn\.Sequential\(block\)"):
        linstab.Network(randomize_bn(TVBasicBlock(3, 3), 0).eval(), input_shape=(3, 8, 8))


def test_meta_models_and_forwards_needing_more_than_the_images_are_refused_clearly():
    """A model on the 'meta' device failed with "Tensor.item() cannot be called on meta tensors";
    a forward with a required extra argument with a bare TypeError from inside the model."""
    with pytest.raises(ValueError, match="weights are on the 'meta' device.*to_empty"):
        linstab.Network(_tv_net(0).to("meta"), input_shape=(3, 8, 8))

    class NeedsMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = _tv_net(0)

        def forward(self, x, mask):
            return self.body(x * mask)

    with pytest.raises(ValueError, match=r"does not run as model\(images\).*missing 1 required.*mask"):
        linstab.Network(NeedsMask().eval(), input_shape=(3, 8, 8))


@pytest.mark.parametrize("method", ["closed", "autodiff"])
def test_operators_after_the_weights_changed_are_refused_and_built_ones_stay_snapshots(method):
    """An operator built after an in-place edit of the weights combined the new weights with the
    activations recorded at the old ones (relative error 0.53), silently; operators built before
    are snapshots of the weights at the linearization point."""
    model = _tv_net(0)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    lin = net.linearize(tiny_image(1), dtype=F64, method=method)
    first = lin.unit(1, 1)
    before = first.materialize()
    ref = dense_jacobian(net.units[0].module, lin.inputs[0][0])
    with torch.no_grad():
        model.layer1[0].conv1.weight.mul_(2.0)
    assert _rel(first.materialize(), before) == 0.0 and _rel(before, ref) < 1e-12
    with pytest.raises(ValueError, match=r"changed .* since net\.linearize\(\).*linearize again"):
        lin.unit(1, 2)
    lin2 = net.linearize(tiny_image(1), dtype=F64, method=method)  # linearizing again works
    assert _rel(lin2.unit(1, 1).materialize(), before) > 0.1


def test_closed_forms_follow_weights_changed_after_wrapping():
    """The closed forms work on copies of the units taken when the network was built: after
    ``model.load_state_dict`` (or an in-place edit) ``lin.unit`` raised 'does not reproduce the
    module; use method='autodiff'' although the closed form applies."""
    model = _tv_net(0)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    model.load_state_dict(_tv_net(5).state_dict())
    _assert_units_exact(net, tiny_image(1))
    with torch.no_grad():
        model.layer1[0].bn2.running_var.mul_(1.00003)  # tiny: within float32's tolerance
    _assert_units_exact(net, tiny_image(1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_low_precision_model_keeps_its_closed_forms(dtype):
    """The twin of a float16/bfloat16 unit ran in its own dtype against the float32 trace and
    never matched: every unit fell back to autodiff with shortcut 'unknown'."""
    model = _tv_net(0).to(dtype)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert [u.shortcut for u in net.units] == ["identity", "identity", "conv-bn", "identity"]
    _assert_units_exact(net, tiny_image(1))
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm"])
def test_parametrized_convolutions_get_exact_closed_forms(kind):
    """A parametrized conv's twin computed its weight in float32: the float64 closed form missed
    the float64 forward pass by 1e-8 and ``lin.unit`` raised."""
    from torch.nn.utils import parametrizations

    model = _tv_net(0)
    for m in list(model.modules()):
        if isinstance(m, nn.Conv2d):
            getattr(parametrizations, kind)(m)
    model.eval()
    state = copy.deepcopy(model.state_dict())
    net = linstab.Network(model, input_shape=(3, 8, 8))
    _assert_units_exact(net, tiny_image(1))
    model(tiny_image(2)[None])  # the user's parametrized layers still work
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_hook_set_attributes_of_a_pruned_model_are_left_as_they_were():
    """``prune`` sets ``conv.weight`` in a forward pre-hook: a float64 linearization left a
    float64 ``weight`` on the user's conv."""
    from torch.nn.utils import prune

    model = _tv_net(0)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            prune.l1_unstructured(m, "weight", amount=0.5)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    lin = net.linearize(tiny_image(1), dtype=F64)
    lin.unit(1, 1, "autodiff").materialize()
    conv = model.layer1[0].conv1
    assert conv.weight.dtype == torch.float32 and type(conv.weight) is torch.Tensor
    _assert_units_exact(net, tiny_image(1))


def test_compiled_parameter_free_and_tuple_returning_models():
    model = _tv_net(0)
    compiled = linstab.Network(torch.compile(model), input_shape=(3, 8, 8))  # never compiled by linstab
    assert compiled.model is model and compiled.units[0].name == "layer1.0"

    class NoParams(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            unit = linstab.models.ResidualUnit
            self.layer = nn.Sequential(unit(nn.Sequential(), None, nn.ReLU()), unit(nn.Sequential(), None))

        def forward(self, x):
            return self.layer(x).flatten(1)

    net = linstab.Network(NoParams().eval(), input_shape=(3, 8, 8))
    assert net.device == torch.device("cpu")
    assert net.linearize(tiny_image()).unit(1, 1).shape == (192, 192)
    assert net.predict(tiny_image()).shape == (1, 192)

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _tv_net(0)

        def forward(self, x):
            return self.net(x), x

    with pytest.raises(TypeError, match="returns tuple, expected the logits as one tensor"):
        linstab.Network(Pair().eval(), input_shape=(3, 8, 8))


def test_a_model_file_that_linstab_cannot_read_says_how_to_analyse_it(tmp_path):
    path = tmp_path / "mine.pt"
    torch.save(_tv_net(0).state_dict(), path)
    with pytest.raises(ValueError, match=r"\.safetensors written by `linstab train`.*linstab\.Network"):
        linstab.load_model(str(path))
    with pytest.raises(ValueError, match="linstab.Network"):
        linstab.load_model("mypackage.nets:build")
    with pytest.raises(TypeError, match="model name must be a str"):
        linstab.load_model(3)


def test_non_finite_weights_and_activations_are_refused_before_any_spectrum():
    """A NaN weight was accepted: the unit silently lost its closed form and the spectrum failed
    later inside LAPACK ("svd failed to converge")."""
    model = _tv_net(0)
    with torch.no_grad():
        model.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values.*layer1\.0\.conv1\.weight"):
        linstab.Network(model, input_shape=(3, 8, 8))
    model = _tv_net(0)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    with torch.no_grad():
        model.layer1[1].bn2.running_var.fill_(1e-80)  # fine in float64, overflows float32
        model.layer1[1].bn2.eps = 1e-80
    net.linearize(tiny_image(1), dtype=F64)
    with pytest.raises(ValueError, match=r"unit 1\.2 \(layer1\.1\) has NaN or infinite activations"):
        net.linearize(tiny_image(1), dtype=torch.float32)


def test_negative_running_variances_and_non_finite_logits_are_refused():
    """A state dict with a negative running variance loaded silently, and ``linstab predict``
    printed class 0 for every image (the argmax of NaN logits)."""
    model = _tv_net(0)
    with torch.no_grad():
        model.layer1[0].bn1.running_var[2] = -1.0
    with pytest.raises(ValueError, match=r"negative running variances \(layer1\.0\.bn1\)"):
        linstab.Network(model, input_shape=(3, 8, 8))
    model = _tv_net(0)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    images = torch.stack([tiny_image(1), tiny_image(2)])
    assert net.predict(images).isfinite().all()
    with torch.no_grad():
        model.layer1[1].bn2.running_var.fill_(1e-80)  # overflows float32
        model.layer1[1].bn2.eps = 1e-80
    with pytest.raises(ValueError, match=r"NaN or infinite logits for 2 of 2 images \(positions \[0, 1\]\)"):
        net.predict(images)


def test_batch_norm_without_running_statistics_is_refused():
    """BatchNorm with ``track_running_stats=False`` uses the batch's statistics in eval mode too:
    refused when the network is built, naming the layer, instead of a batch-of-one Jacobian."""
    bn = nn.BatchNorm2d(4, track_running_stats=False)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10)).eval()  # fmt: skip
    with pytest.raises(ValueError, match=r"without running statistics \(1;.*InstanceNorm2d"):
        linstab.Network(model, input_shape=(3, 8, 8))


def test_a_pre_hook_that_changes_a_units_input_is_part_of_the_unit():
    """linstab's pre-hook ran after the user's: a unit whose pre-hook halves its input was recorded
    at the halved input, so its Jacobian was taken at the wrong point (relative error 1.9, the
    hook applied twice) and ``lin.stage(1)`` refused the 'unchained' units."""
    model = _tv_net(0)
    model.layer1[1].register_forward_pre_hook(lambda _m, args: (0.5 * args[0],))
    net = linstab.Network(model, input_shape=(3, 8, 8))
    lin = net.linearize(tiny_image(1), dtype=F64)
    assert torch.equal(lin.inputs[1], lin.outputs[0])  # what the caller passed
    assert net.unit(1, 2).canonical is None  # the hook is no conv + BN: autodiff
    for i, u in enumerate(net.units):
        D = lin.unit(u.stage, u.index).materialize()
        assert _rel(D, dense_jacobian(u.module, lin.inputs[i][0])) < 1e-12, u.address
    J = dense_jacobian(net.units[1].module, lin.inputs[1][0]) @ dense_jacobian(
        net.units[0].module, lin.inputs[0][0]
    )
    assert _rel(lin.stage(1).materialize(), J) < 1e-12


class _WSConv2d(nn.Conv2d):
    """A weight-standardized convolution (BiT ResNets): its forward does not use ``weight`` as is."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_hooked_layers_and_layer_subclasses_of_a_recognized_block_get_autodiff_jacobians():
    """The twin of a torchvision-style block ran its copied layers' forward passes (hooks and
    subclass forwards included) and matched the module, but the closed form reads the layers'
    weights: ``lin.unit`` raised 'closed form ... does not reproduce the module' for a forward
    hook on a conv, a pre-hook on a conv, a hook on a batch norm and a weight-standardized conv."""
    model = _tv_net(0)
    model.layer1[0].conv2.register_forward_hook(lambda _m, _a, out: 0.5 * out)
    model.layer1[1].conv1.register_forward_pre_hook(lambda _m, args: (2.0 * args[0],))
    model.layer2[0].bn1.register_forward_hook(lambda _m, _a, out: out + 0.3)
    ws = _WSConv2d(8, 8, 3, 1, 1, bias=False)
    ws.weight.data.copy_(model.layer2[1].conv1.weight)
    model.layer2[1].conv1 = ws
    net = linstab.Network(model.eval(), input_shape=(3, 8, 8))
    assert [u.canonical for u in net.units] == [None] * 4
    assert [u.shortcut for u in net.units] == ["identity", "identity", "conv-bn", "identity"]
    _assert_units_exact(net, tiny_image(1), closed=False)
    # a hook that leaves the output alone keeps the closed form
    model = _tv_net(0)
    seen = []
    model.layer1[0].conv1.register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
    net = linstab.Network(model, input_shape=(3, 8, 8))
    _assert_units_exact(net, tiny_image(1), closed=True)


class _CVBlock(nn.Module):
    """pytorchcv's ``conv``/``bn``/``activ`` block."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, act: nn.Module | None) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)
        if act is not None:
            self.activ = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.activ(x) if hasattr(self, "activ") else x


class _CVUnit(nn.Module):
    """A pytorchcv-style ``ResUnit`` (``body.conv1``, ``body.conv2``, ``identity_conv``, ``activ``)."""

    def __init__(self, cin: int, cout: int, stride: int, act) -> None:
        super().__init__()
        self.resize_identity = cin != cout or stride != 1
        self.body = nn.Sequential()
        self.body.add_module("conv1", _CVBlock(cin, cout, 3, stride, act()))
        self.body.add_module("conv2", _CVBlock(cout, cout, 3, 1, None))
        if self.resize_identity:
            self.identity_conv = _CVBlock(cin, cout, 1, stride, None)
        self.activ = act()

    def forward(self, x):
        identity = self.identity_conv(x) if self.resize_identity else x
        return self.activ(self.body(x) + identity)


class _CVNet(nn.Module):
    def __init__(self, act) -> None:
        super().__init__()
        self.stem = _Stem()
        self.stage1 = nn.Sequential(_CVUnit(4, 4, 1, act), _CVUnit(4, 8, 2, act))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.stage1(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize(
    "act",
    [lambda: nn.LeakyReLU(0.1, inplace=True), lambda: nn.SiLU(inplace=True), lambda: nn.ELU(inplace=True)],
)
def test_in_place_activations_of_a_pytorchcv_style_unit_keep_exact_closed_forms(act):
    """The closed form's copies kept ``inplace=True`` for activations other than ReLU: the
    derivative's jvp overwrote the pre-activations and the activation was applied twice, so
    ``lin.unit`` raised 'closed form ... does not reproduce the module'."""
    torch.manual_seed(0)
    model = randomize_bn(_CVNet(act), 0).eval()
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert [u.shortcut for u in net.units] == ["identity", "conv-bn"]
    _assert_units_exact(net, tiny_image(1), closed=True)
    assert model.stage1[0].activ.inplace and model.stage1[0].body.conv1.activ.inplace  # the user's


class _NoisyBlock(TVBasicBlock):
    def forward(self, x):
        out = F.dropout(self.relu(self.bn1(self.conv1(x))), 0.3)  # training=True by default: also in eval
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def test_a_forward_pass_that_is_random_in_eval_mode_is_refused():
    """``F.dropout(x, p)`` drops also in eval mode: each linearization was that of another random
    map (relative error 1 against the Jacobian of a second pass), accepted silently."""
    torch.manual_seed(0)
    model = randomize_bn(TVResNet(_NoisyBlock, (2,), (4,)), 0).eval()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(
        ValueError, match=r"TVResNet is not deterministic in eval mode.*training=self\.training"
    ):
        linstab.Network(model, input_shape=(3, 8, 8))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not model.training


def test_weights_edited_through_data_are_caught_by_the_output_check():
    """``param.data`` edits leave no trace in the version counters. After ``net.linearize()`` an
    autodiff operator combined the new weights with the old activations, silently; between
    building the network and linearizing, ``lin.unit`` (method 'auto') raised a RuntimeError from
    the stale closed form instead of using the exact autodiff Jacobian."""
    model = _tv_net(0)
    net = linstab.Network(model, input_shape=(3, 8, 8))
    lin = net.linearize(tiny_image(1), dtype=F64)
    before = dense_jacobian(model.layer1[0], lin.inputs[0][0])
    model.layer1[0].conv1.weight.data.mul_(2.0)
    with pytest.raises(
        ValueError, match=r"unit 1\.1 \(TVBasicBlock\): the module.*does not reproduce.*param\.data"
    ):
        lin.unit(1, 1, "autodiff")
    # the closed form is the twin's snapshot: the Jacobian at the linearization point, old weights
    assert _rel(lin.unit(1, 1, "closed").materialize(), before) < 1e-12
    # edited before linearizing: the twin is stale, the module's own Jacobian is used
    lin = net.linearize(tiny_image(1), dtype=F64)
    after = dense_jacobian(model.layer1[0], lin.inputs[0][0])
    assert _rel(lin.unit(1, 1).materialize(), after) < 1e-12 and _rel(after, before) > 0.1
    with pytest.raises(ValueError, match=r"unit 1\.1.*closed form.*does not reproduce.*method='autodiff'"):
        lin.unit(1, 1, "closed")


class _NoFinalActBlock(TVBasicBlock):
    """A torchvision-style block without the activation after the sum."""

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return out + (x if self.downsample is None else self.downsample(x))


def test_auto_falls_back_to_autodiff_where_a_twin_matched_only_at_discovery():
    """A block without a final ReLU matched its ReLU twin at the discovery image (all sums
    positive); at an image where sums are negative ``lin.unit`` (method 'auto') raised a
    RuntimeError instead of giving the autodiff Jacobian."""

    class Shifted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 1)
            self.layer1 = nn.Sequential(_NoFinalActBlock(4, 4))
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.layer1(self.stem(x)).mean((2, 3)))

    torch.manual_seed(0)
    model = randomize_bn(Shifted(), 0).eval()
    with torch.no_grad():
        model.stem.weight.fill_(10.0)  # 10 * (r + g + b) - 1: positive at the discovery image
        model.stem.bias.fill_(-1.0)
        model.layer1[0].bn2.weight.mul_(1e-3)
        model.layer1[0].bn2.bias.zero_()
    net = linstab.Network(model, input_shape=(3, 8, 8))
    assert net.unit(1, 1).canonical is not None  # the twin matched where the network was built
    lin = net.linearize(torch.zeros(3, 8, 8), dtype=F64)  # block input -1: every sum negative
    D = lin.unit(1, 1).materialize()
    assert _rel(D, dense_jacobian(model.layer1[0], lin.inputs[0][0])) < 1e-12
    with pytest.raises(ValueError, match=r"closed form.*does not reproduce.*method='autodiff'"):
        lin.unit(1, 1, "closed")


def test_uninitialized_lazy_layers_are_refused_and_left_uninitialized():
    class Lazy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.layer1, self.fc = (
                nn.LazyConv2d(4, 3, 1, 1),
                nn.Sequential(TVBasicBlock(4, 4)),
                nn.Linear(4, 10),
            )

        def forward(self, x):
            return self.fc(self.layer1(F.relu(self.stem(x))).mean((2, 3)))

    model = Lazy().eval()
    with pytest.raises(ValueError, match=r"uninitialized lazy parameters \(stem\.weight.*run it once"):
        linstab.Network(model, input_shape=(3, 8, 8))
    assert isinstance(model.stem.weight, nn.parameter.UninitializedParameter)
