"""ImageNet ResNets (torchvision layout), safe weight loading, preprocessing, linearization.

Fast tests use 64x64 inputs (the smallest standard-looking size: every stage keeps >= 2x2 maps);
the full 224x224 ResNet-50 check is in the slow tier. Comparisons with torchvision itself skip
where torchvision cannot be imported (its compiled ops must match the installed torch).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from linstab.data import imagenet as idata
from linstab.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, preprocess
from linstab.models import imagenet as imodels
from linstab.models import sha256_file
from linstab.models.imagenet import build_imagenet_resnet
from linstab.network.imagenet import imagenet_network
from linstab.operators import AutodiffJacobian, UnitJacobian

PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160}
LAYERS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
}
BOTTLENECK = {"resnet18": False, "resnet34": False, "resnet50": True, "resnet101": True}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def import_torchvision(name: str):
    """``pytest.importorskip`` for torchvision, also skipping where it is installed but does not
    import next to this torch build (e.g. "operator torchvision::nms does not exist")."""
    try:
        return pytest.importorskip(name, reason="torchvision is not installed")
    except (RuntimeError, OSError, AttributeError) as exc:
        pytest.skip(f"torchvision does not import next to this torch build: {exc}")


def torchvision_keys(bottleneck: bool, layers: tuple[int, ...]) -> list[str]:
    """torchvision's ResNet state-dict keys, in order, written out from its documented layout."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for k, n in enumerate(layers, start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            for j in range(1, 4 if bottleneck else 3):
                keys += [f"{p}.conv{j}.weight"] + [f"{p}.bn{j}.{s}" for s in bn]
            if i == 0 and (k > 1 or bottleneck):
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


def reference_forward(sd: dict, x: torch.Tensor, bottleneck: bool, layers: tuple[int, ...]) -> torch.Tensor:
    """torchvision's ResNet forward written with torch.nn.functional on the state dict alone."""

    def bn(h, p):
        return F.batch_norm(
            h,
            sd[f"{p}.running_mean"],
            sd[f"{p}.running_var"],
            sd[f"{p}.weight"],
            sd[f"{p}.bias"],
            False,
            0.0,
            1e-5,
        )

    h = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    h = F.max_pool2d(h, 3, 2, 1)
    for k, n in enumerate(layers, start=1):
        for i in range(n):
            p, stride = f"layer{k}.{i}", (2 if k > 1 and i == 0 else 1)
            if bottleneck:  # v1.5: the stride on the 3x3 convolution
                o = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
                o = F.relu(bn(F.conv2d(o, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
                o = bn(F.conv2d(o, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                o = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
                o = bn(F.conv2d(o, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                s = bn(F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            else:
                s = h
            h = F.relu(o + s)
    return F.linear(h.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


# ---- architecture ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(PARAMS))
def test_parameter_counts_and_torchvision_keys(arch):
    model = getattr(imodels, arch)()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch]
    assert list(model.state_dict()) == torchvision_keys(BOTTLENECK[arch], LAYERS[arch])
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert model.maxpool.kernel_size == 3 and model.maxpool.stride == 2
    first = model.layer2[0]
    strided = first.conv2 if BOTTLENECK[arch] else first.conv1  # v1.5 for Bottleneck
    assert strided.stride == (2, 2) and first.conv1.stride == ((1, 1) if BOTTLENECK[arch] else (2, 2))
    assert first.downsample[0].kernel_size == (1, 1) and first.downsample[0].stride == (2, 2)
    assert model.fc.out_features == 1000


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_forward_matches_functional_reference(arch):
    model = build_imagenet_resnet(arch, seed=1, bn="random").double()
    sd = model.state_dict()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
    assert got.shape == (2, 1000)
    assert rel(got, reference_forward(sd, x, BOTTLENECK[arch], LAYERS[arch])) < 1e-12


def test_names_seeds_and_record():
    a = build_imagenet_resnet("torchvision:resnet18", seed=5)
    b = build_imagenet_resnet("ResNet18", seed=5)
    c = build_imagenet_resnet("resnet18", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["layer1.0.conv1.weight"], sc["layer1.0.conv1.weight"])
    # torchvision's BN initialization; the global RNG is left alone
    assert torch.all(sa["bn1.weight"] == 1) and torch.all(sa["bn1.bias"] == 0)
    state = torch.random.get_rng_state()
    build_imagenet_resnet("resnet18", seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    r = a.linstab_record
    assert r.random and r.weights is None and r.sha256 is None and r.seed == 5 and r.bn == "torchvision"
    assert r.label == "torchvision:resnet18 (random weights, seed 5)"
    d = json.loads(json.dumps(r.as_dict()))
    assert d["random"] is True and d["arch"] == "resnet18"
    # randomized BN: seeded, non-trivial
    e = build_imagenet_resnet("resnet18", seed=5, bn="random")
    f = build_imagenet_resnet("resnet18", seed=5, bn="random")
    assert torch.equal(e.bn1.running_var, f.bn1.running_var)
    assert not torch.allclose(e.bn1.running_var, torch.ones(64))
    assert "random BN" in e.linstab_record.label
    with pytest.raises(ValueError, match="torchvision:resnet18.*torchvision:resnet101"):
        build_imagenet_resnet("resnet152")
    with pytest.raises(ValueError, match="bn must be one of"):
        build_imagenet_resnet("resnet18", bn="zero")


# ---- weights ---------------------------------------------------------------------------------
def test_weights_roundtrip_pth_safetensors_and_wrappers(tmp_path):
    from safetensors.torch import save_file

    src = build_imagenet_resnet("resnet18", seed=3, bn="random")
    sd = src.state_dict()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = src(x)
    files = {
        "plain.pth": lambda p: torch.save(sd, p),
        "wrapped.pt": lambda p: torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, p),
        "old.pth": lambda p: torch.save({k: v for k, v in sd.items() if "num_batches" not in k}, p),
        "w.safetensors": lambda p: save_file({k: v.contiguous() for k, v in sd.items()}, str(p)),
    }
    for fname, write in files.items():
        path = tmp_path / fname
        write(path)
        model = build_imagenet_resnet("torchvision:resnet18", weights=path)
        with torch.no_grad():
            assert torch.equal(model(x), ref), fname
        r = model.linstab_record
        assert not r.random and r.seed is None and r.bn is None and r.source == "file"
        assert r.sha256 == sha256_file(path) and r.weights == str(path.resolve())
        assert fname in r.label and "random" not in r.label
    net = imagenet_network("resnet18", weights=tmp_path / "plain.pth", input_size=64)
    assert net.sha256 == sha256_file(tmp_path / "plain.pth") and net.random_weights is False


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(build_imagenet_resnet("resnet18").state_dict(), path)
    with pytest.raises(ValueError, match=r"missing keys: layer1\.2\.conv1\.weight.*looks like resnet18"):
        build_imagenet_resnet("resnet34", weights=path)
    with pytest.raises(ValueError, match=r"mis-shaped keys: conv1\.weight|mis-shaped keys: layer1\.0"):
        build_imagenet_resnet("resnet50", weights=path)
    small50 = tmp_path / "r50-width8.pth"
    torch.save(build_imagenet_resnet("resnet50", width=8).state_dict(), small50)
    with pytest.raises(ValueError, match=r"unexpected keys: layer1\.0\.conv3\.weight.*looks like resnet50"):
        build_imagenet_resnet("resnet18", weights=small50)
    with pytest.raises(ValueError, match="bn='random' applies to random weights only"):
        build_imagenet_resnet("resnet18", weights=path, bn="random")
    with pytest.raises(FileNotFoundError):
        build_imagenet_resnet("resnet18", weights=tmp_path / "absent.pth")
    # a different head size is taken from the file
    sd = build_imagenet_resnet("resnet18", num_classes=10).state_dict()
    torch.save(sd, tmp_path / "ten.pth")
    assert build_imagenet_resnet("resnet18", weights=tmp_path / "ten.pth").fc.out_features == 10
    with pytest.raises(ValueError, match=r"fc\.weight: file \(10, 512\), model \(1000, 512\)"):
        build_imagenet_resnet("resnet18", weights=tmp_path / "ten.pth", num_classes=1000)


class Payload:
    """A class that is not on torch's weights_only allow-list."""


def test_pickled_objects_nonfinite_values_and_false_names_are_refused(tmp_path):
    sd = build_imagenet_resnet("resnet18").state_dict()
    path = tmp_path / "pickled.pth"
    torch.save({**sd, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="pickled objects other than tensors"):
        build_imagenet_resnet("resnet18", weights=path)
    bad = dict(sd)
    bad["layer3.1.bn2.weight"] = bad["layer3.1.bn2.weight"].clone()
    bad["layer3.1.bn2.weight"][0] = float("nan")
    torch.save(bad, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=r"NaN or infinite values in \['layer3\.1\.bn2\.weight'\]"):
        build_imagenet_resnet("resnet18", weights=tmp_path / "nan.pth")
    # torch.hub names files <arch>-<SHA-256 prefix>.pth: a file under a known name is checked
    fake = tmp_path / "resnet18-f37072fd.pth"
    torch.save(sd, fake)
    with pytest.raises(ValueError, match="SHA-256 starts with f37072fd"):
        build_imagenet_resnet("resnet18", weights=fake)
    for junk in ("junk.pth", "junk.safetensors"):
        (tmp_path / junk).write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="not a readable"):
            build_imagenet_resnet("resnet18", weights=tmp_path / junk)


def test_same_logits_as_torchvision():
    tv = import_torchvision("torchvision.models")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for arch in ("resnet18", "resnet50"):
        ours = build_imagenet_resnet(arch, seed=4, bn="random")
        # same seed, same initialization as torchvision (same modules in the same order)
        torch.manual_seed(4)
        ref = getattr(tv, arch)(weights=None)
        ref_sd = ref.state_dict()
        init = build_imagenet_resnet(arch, seed=4).state_dict()
        assert all(torch.equal(init[k], ref_sd[k]) for k in ref_sd)
        # same state dict (strict), same logits, both ways
        ref.load_state_dict(ours.state_dict(), strict=True)
        ref.eval()
        ours2 = getattr(imodels, arch)()
        ours2.load_state_dict(ref.state_dict(), strict=True)
        ours2.eval()
        with torch.no_grad():
            assert torch.allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)
            assert torch.equal(ours2(x), ours(x))


# ---- network, input sizes --------------------------------------------------------------------
def test_network_random_weights_and_input_size_checks():
    net = imagenet_network("torchvision:resnet18", input_size=64)
    assert net.mean == IMAGENET_MEAN and net.std == IMAGENET_STD
    assert net.random_weights is True and "random weights" in net.name and net.sha256 is None
    assert net.input_shape == (3, 64, 64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert net.predict(x).shape == (2, 1000)
    with pytest.raises(ValueError, match="too small.*at least 32x32"):
        net.linearize(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"80x80 images, but this network takes 64x64.*preprocess"):
        net.predict(torch.rand(1, 3, 80, 80))
    with pytest.raises(ValueError, match="preprocess"):
        net.activations(torch.rand(1, 3, 224, 224))
    with pytest.raises(TypeError, match="preprocess"):
        net.predict(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 RGB channels.*preprocess"):
        net.predict(torch.rand(1, 64, 64, 3))
    with pytest.raises(ValueError, match="input_size 16x16 is too small"):
        imagenet_network("resnet18", input_size=16)
    # a model in training mode is refused (linstab never changes its mode)
    with pytest.raises(ValueError, match="training mode"):
        imagenet_network(imodels.resnet18())
    with pytest.raises(ValueError, match="applies to a model name"):
        imagenet_network(build_imagenet_resnet("resnet18"), weights="x.pth")
    # a non-square size works and is checked as such
    rect = imagenet_network("resnet18", input_size=(64, 96))
    assert rect.predict(torch.rand(1, 3, 64, 96)).shape == (1, 1000)


EXPECTED_KINDS = {
    # (kind, shortcut) of the first unit of each stage; all other units are regular/identity
    "resnet18": {
        1: ("regular", "identity"),
        2: ("downsampling", "conv-bn"),
        3: ("downsampling", "conv-bn"),
        4: ("downsampling", "conv-bn"),
    },
    "resnet50": {
        1: ("projection", "conv-bn"),
        2: ("downsampling", "conv-bn"),
        3: ("downsampling", "conv-bn"),
        4: ("downsampling", "conv-bn"),
    },
}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_units_closed_form_matches_autodiff(arch):
    """Every unit at 64x64, float64: the closed form is used, agrees with torch.func, adjoint holds."""
    net = imagenet_network(arch, seed=2, bn="random", input_size=64)
    assert [len(s) for s in net.stages] == list(LAYERS[arch])
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3))
    lin = net.linearize(img, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    for u in net.units:
        want = EXPECTED_KINDS[arch][u.stage] if u.index == 1 else ("regular", "identity")
        assert (u.kind, u.shortcut) == want, u.address
        assert u.canonical is not None and u.name == f"layer{u.stage}.{u.index - 1}"
        J = lin.unit(u.stage, u.index)  # "auto" must pick the closed form
        A = lin.unit(u.stage, u.index, "autodiff")
        assert isinstance(J, UnitJacobian) and isinstance(A, AutodiffJacobian)
        V = torch.randn((3, *u.in_shape), generator=g, dtype=torch.float64)
        W = torch.randn((3, *u.out_shape), generator=g, dtype=torch.float64)
        assert rel(J @ V, A @ V) < 1e-12, u.address
        assert rel(J.T @ W, A.T @ W) < 1e-12, u.address
        lhs = float(((J @ V) * W).sum())
        rhs = float((V * (J.T @ W)).sum())
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), u.address
    # the network operator chains all units: compare with a torch.func jvp through them
    seq = torch.nn.Sequential(*[u.module for u in net.units])
    state = {k: v.double() if v.is_floating_point() else v for k, v in seq.state_dict().items()}
    v = torch.randn(net.units[0].in_shape, generator=g, dtype=torch.float64)

    def f(z):
        return torch.func.functional_call(seq, state, (z.unsqueeze(0),))[0]

    _, jv = torch.func.jvp(f, (lin.inputs[0][0],), (v,))
    assert rel(lin.network() @ v, jv) < 1e-11


# ---- preprocessing ---------------------------------------------------------------------------
def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 RGB image (H, W, 3): low-frequency patterns, no 8-bit clipping."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [
        0.5 + 0.4 * np.sin(2 * np.pi * (g.uniform(0.5, 2) * yy + g.uniform(0.5, 2) * xx + g.uniform()))
        for _ in range(3)
    ]
    return np.round(255 * np.stack(chans, -1)).astype(np.uint8)


def test_preprocess_geometry_is_torchvisions():
    assert idata.resized_size((300, 400), 256) == (256, 341)  # int(256 * 400 / 300) = 341
    assert idata.resized_size((500, 375), 256) == (341, 256)
    assert idata.center_crop_box((256, 301), (224, 224)) == (16, 38)  # round(38.5) = 38
    assert idata.center_crop_box((256, 303), (224, 224)) == (16, 40)  # round(39.5) = 40
    # shorter side already 256: no resampling, the crop is an exact slice
    arr = smooth_image(256, 301)
    out = preprocess(arr)
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    want = torch.from_numpy(arr[16:240, 38:262]).permute(2, 0, 1).float() / 255
    assert torch.equal(out[0], want)
    from PIL import Image

    pil = Image.fromarray(arr)
    assert torch.equal(preprocess(pil), out)
    assert torch.equal(preprocess(torch.from_numpy(arr).permute(2, 0, 1)), out)  # uint8 CHW tensor
    # channels-first float tensor: same slice
    t = torch.from_numpy(arr).permute(2, 0, 1).double() / 255
    assert torch.allclose(preprocess(t)[0], want, atol=1e-6)


def test_preprocess_resizing_paths_files_and_sizes(tmp_path):
    from PIL import Image

    arr = smooth_image(300, 400, seed=1)
    a = preprocess(arr)  # PIL path
    b = preprocess(arr.astype(np.float64) / 255)  # torch antialiased bilinear path
    assert a.shape == b.shape == (1, 3, 224, 224)
    assert float((a - b).abs().max()) < 2 / 255
    assert 0.0 <= float(b.min()) and float(b.max()) <= 1.0
    want = Image.fromarray(arr).resize((341, 256), Image.BILINEAR).crop((58, 16, 282, 240))
    assert torch.equal(a[0], torch.from_numpy(np.asarray(want).copy()).permute(2, 0, 1).float() / 255)
    # files (PNG, JPEG, grayscale), a folder, a mixed list, other sizes
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(smooth_image(240, 320, seed=2)).save(tmp_path / "b.jpg", quality=90)
    Image.fromarray(arr[..., 0]).save(tmp_path / "c.png")  # mode L
    folder = preprocess(tmp_path)
    assert folder.shape == (3, 3, 224, 224)
    assert torch.equal(folder[0], a[0])
    assert torch.equal(folder[2, 0], folder[2, 1])  # gray -> RGB
    mixed = preprocess([tmp_path / "a.png", Image.open(tmp_path / "b.jpg"), arr], size=64)
    assert mixed.shape == (3, 3, 64, 64)
    assert preprocess(arr, size=64, resize=64).shape == (1, 3, 64, 64)
    assert preprocess(np.stack([arr, arr]), size=(32, 48)).shape == (2, 3, 32, 48)


def test_preprocess_errors(tmp_path):
    arr = smooth_image(64, 64)
    with pytest.raises(ValueError, match="empty list"):
        preprocess([])
    with pytest.raises(ValueError, match="empty batch"):
        preprocess(np.zeros((0, 64, 64, 3), dtype=np.uint8))
    nan = arr.astype(np.float32) / 255
    nan[3, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        preprocess(nan)
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide 0\.\.255"):
        preprocess(arr.astype(np.float32))
    with pytest.raises(ValueError, match="3 color channels.*drop the alpha"):
        preprocess(np.zeros((64, 64, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(arr[..., 0])
    with pytest.raises(ValueError, match="uint8.*or float"):
        preprocess(arr.astype(np.int32))
    with pytest.raises(ValueError, match="does not exist"):
        preprocess(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="no image files"):
        preprocess(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"no image")
    with pytest.raises(ValueError, match="not a readable image"):
        preprocess(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="smaller than the crop"):
        preprocess(arr, size=224, resize=200)
    with pytest.raises(TypeError):
        preprocess(42)


def test_preprocess_matches_torchvision_transforms():
    T = import_torchvision("torchvision.transforms")
    from PIL import Image

    arr = smooth_image(300, 457, seed=3)
    classic = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    assert torch.equal(preprocess(Image.fromarray(arr))[0], classic(Image.fromarray(arr)))
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    tensor_tf = T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224)])
    assert torch.allclose(preprocess(t)[0], tensor_tf(t).clamp(0, 1), atol=1e-6)


# ---- the full-size network (slow tier) ---------------------------------------------------------
@pytest.mark.slow
def test_resnet50_224_closed_form_matches_autodiff():
    net = imagenet_network("resnet50", seed=0, bn="random")
    img = preprocess(smooth_image(300, 400, seed=5))
    lin = net.linearize(img[0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for s, k in [(1, 1), (1, 2), (2, 1), (3, 1), (4, 1), (4, 3)]:
        u = net.unit(s, k)
        J, A = lin.unit(s, k), lin.unit(s, k, "autodiff")
        assert isinstance(J, UnitJacobian)
        V = torch.randn((2, *u.in_shape), generator=g, dtype=torch.float64)
        W = torch.randn((2, *u.out_shape), generator=g, dtype=torch.float64)
        assert rel(J @ V, A @ V) < 1e-12 and rel(J.T @ W, A.T @ W) < 1e-12, u.address
        lhs, rhs = float(((J @ V) * W).sum()), float((V * (J.T @ W)).sum())
        assert abs(lhs - rhs) <= 1e-12 * float((J @ V).norm() * W.norm()), u.address


@pytest.mark.parametrize(
    "name, hint",
    [
        ("torchvision:resnet5", "did you mean 'torchvision:resnet50'"),
        ("torchvision:resnet-50", "did you mean 'torchvision:resnet50'"),
        ("torchvision:ResNet_18", "did you mean 'torchvision:resnet18'"),
        ("torchvision:resnet152", "a torchvision architecture that linstab does not define"),
    ],
)
def test_a_misspelled_imagenet_name_gets_a_suggestion(name, hint):
    """An unknown ``torchvision:`` name only listed the known ones; a near miss is now named, and
    a real torchvision ResNet that linstab lacks is not 'corrected' into another depth."""
    import linstab

    with pytest.raises(ValueError, match=rf"unknown ImageNet model.*{hint}.*known: torchvision:resnet18"):
        linstab.load_model(name, input_size=64)


def test_fractional_sizes_and_weights_folders_are_refused(tmp_path):
    """``input_size=(64.5, 64)`` and ``preprocess(size=(64.7, 64))`` were truncated to 64 without a
    word; a folder given as weights was said not to exist."""
    with pytest.raises(
        ValueError, match=r"input_size must be an int or \(height, width\), got \(64\.5, 64\)"
    ):
        imagenet_network("resnet18", input_size=(64.5, 64))
    with pytest.raises(ValueError, match="input_size must be an int"):
        imagenet_network("resnet18", input_size=("64", 64))
    assert imagenet_network("resnet18", width=8, input_size=(np.int64(32), 40)).input_shape == (3, 32, 40)
    with pytest.raises(ValueError, match=r"size must be an int or \(height, width\), got \(64\.7, 64\)"):
        preprocess(smooth_image(80, 80), size=(64.7, 64))
    assert preprocess(smooth_image(80, 80), size=(np.int64(64), 48)).shape == (1, 3, 64, 48)
    with pytest.raises(
        IsADirectoryError, match=rf"weights {re.escape(str(tmp_path))} for 'torchvision:resnet18' is a folder"
    ):
        imagenet_network("torchvision:resnet18", weights=tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder, not a state-dict file"):
        imodels.load_imagenet_state_dict(tmp_path)
