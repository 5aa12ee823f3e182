"""Models, the checkpoint registry, weight resolution and safe loading."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch

import linstab
from linstab import models
from linstab.models import REGISTRY, CifarResNet, build_from_spec, resolve_weights


def test_architecture_shapes_and_params():
    for depth, params in [(20, 272474), (56, 855770), (110, 1730714)]:
        m = CifarResNet(depth, "B").eval()
        # pytorchcv's published weight counts for resnet{20,56,110}_cifar10
        assert sum(p.numel() for p in m.parameters()) == params
        assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    a = CifarResNet(20, "A")
    assert sum(p.numel() for p in a.parameters()) == 269722  # akamaster ResNet-20: 0.27M
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="'A' or 'B'"):
        CifarResNet(20, "C")


def test_pytorchcv_state_dict_loads_and_matches(tmp_path):
    pcv = pytest.importorskip("pytorchcv.models.resnet_cifar")
    torch.manual_seed(0)
    ref = pcv.resnet56_cifar10()
    from factories import randomize_bn

    randomize_bn(ref, 1)
    ref.eval()
    path = tmp_path / "resnet56_cifar10.pth"
    torch.save(ref.state_dict(), path)
    sd = models.load_state_dict_file(path, "pytorchcv")
    ours = CifarResNet(56, "B")
    ours.load_state_dict(sd, strict=True)
    ours.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    # the network view of the pytorchcv model itself is recognized unit by unit
    net = linstab.Network(ref)
    assert len(net.units) == 27
    assert [u.shortcut for u in net.units if u.kind == "downsampling"] == ["conv-bn", "conv-bn"]


def test_registry_entries():
    for name in ["resnet20-akamaster", "resnet56-akamaster", "resnet56-pytorchcv", "resnet110-pytorchcv"]:
        assert name in REGISTRY
    spec = REGISTRY["resnet56-akamaster"]
    assert spec.shortcut == "A" and spec.depth == 56 and spec.sha256.startswith("4bfd9763")
    assert spec.url.startswith("https://")
    assert REGISTRY["resnet110-pytorchcv"].shortcut == "B"
    with pytest.raises(ValueError, match="unknown model"):
        linstab.load_model("resnet57-nowhere")


def test_a_misspelled_or_empty_model_name_gets_a_suggestion_or_the_list():
    with pytest.raises(ValueError, match="did you mean 'resnet56-akamaster'"):
        linstab.load_model("resnet56-akamster")
    with pytest.raises(ValueError, match="did you mean 'resnet20-linstab'"):
        linstab.load_model("ResNet20-linstab")
    with pytest.raises(ValueError, match="model name is empty; give a registered name"):
        linstab.load_model("  ")


def test_missing_weights_fail_fast_with_three_ways(monkeypatch, tmp_path):
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LINSTAB_CACHE_DIR", str(tmp_path / "cache"))
    spec = REGISTRY["resnet56-akamaster"]
    with pytest.raises(FileNotFoundError) as err:
        resolve_weights(spec, download=False)
    msg = str(err.value)
    assert spec.file_name in msg and "--weights" in msg and "LINSTAB_WEIGHTS_DIR" in msg
    assert str(tmp_path / "cache") in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights(spec, tmp_path / "nope.th")


def test_download_failure_is_reported(monkeypatch, tmp_path):
    monkeypatch.delenv("LINSTAB_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("LINSTAB_CACHE_DIR", str(tmp_path / "cache"))

    def boom(url, target, timeout=20.0):
        raise OSError("network unreachable")

    monkeypatch.setattr(models.weights, "_download", boom)
    with pytest.raises(FileNotFoundError, match="download from https://.* failed: network unreachable"):
        resolve_weights(REGISTRY["resnet20-akamaster"])


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(tmp_path))
    spec = REGISTRY["resnet20-akamaster"]
    fake = tmp_path / "sub" / spec.file_name
    fake.parent.mkdir()
    torch.save({"state_dict": CifarResNet(20, "A").state_dict()}, fake)
    with pytest.raises(ValueError, match="SHA-256"):
        resolve_weights(spec)
    with pytest.raises(ValueError, match="SHA-256"):
        linstab.load_model("resnet20-akamaster", weights=fake)


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    path = tmp_path / "evil.th"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        models.load_state_dict_file(path, "akamaster")
    assert (tmp_path / "victim").is_dir()


@pytest.mark.usefixtures("shared_weights")
@pytest.mark.parametrize("name", ["resnet20-akamaster", "resnet56-akamaster"])
def test_akamaster_weights_classify_default_images(name):
    net = linstab.load_model(name)
    assert net.sha256 == REGISTRY[name].sha256
    x, y = linstab.default_images()
    pred = net.predict(x).argmax(1)
    assert pred.tolist() == y.tolist()  # all 20 correct


def test_weights_dir_is_searched_recursively(shared_weights, tmp_path, monkeypatch):
    src = Path(shared_weights).rglob(REGISTRY["resnet20-akamaster"].file_name)
    src = next(src)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (deep / src.name).symlink_to(src)
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(tmp_path))
    path = resolve_weights(REGISTRY["resnet20-akamaster"], download=False)
    assert path.parent == deep
    model, _ = build_from_spec(REGISTRY["resnet20-akamaster"])
    assert not model.training
    with open(src, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == REGISTRY["resnet20-akamaster"].sha256


def test_default_models_prefer_embedded_linstab_and_pair_the_paper_networks(monkeypatch):
    """The default model is the paper's ResNet-56 when embedded, else the best embedded linstab model;
    the report's default is the paper's ResNet-56 and ResNet-110 side by side once both are embedded."""
    from dataclasses import replace

    from linstab.models.registry import PAPER_PAIR, default_model_name, default_report_models

    base = REGISTRY["resnet20-linstab"]
    fake = dict(REGISTRY)
    monkeypatch.setattr(models.registry, "REGISTRY", fake)
    fake["resnet56-linstab"] = replace(base, name="resnet56-linstab", depth=56, published_error=8.0)
    assert default_model_name() == "resnet56-linstab"
    assert default_report_models() == ["resnet56-linstab"]
    fake["resnet110-linstab"] = replace(base, name="resnet110-linstab", depth=110, published_error=7.5)
    assert default_report_models() == list(PAPER_PAIR)
    assert default_model_name() == "resnet56-linstab"  # the paper's ResNet-56, though ResNet-110 is better
    del fake["resnet56-linstab"]
    assert default_model_name() == "resnet110-linstab" and default_report_models() == ["resnet110-linstab"]
    fake["resnet56-linstab"] = replace(base, name="resnet56-linstab", depth=56, published_error=8.0)
    del fake["resnet56-linstab"], fake["resnet110-linstab"]
    for name in list(fake):
        if fake[name].source == "linstab":
            del fake[name]
    assert default_model_name() == "resnet56-akamaster" and default_report_models() == ["resnet56-akamaster"]


def _model_file(tmp_path: Path, stem: str, data: bytes | None = None, **registry) -> Path:
    """A ``.safetensors`` model of a ResNet-8 (option B) with a ``linstab train`` style sidecar
    whose SHA-256 is that of the file as written (``data`` replaces its bytes)."""
    import json

    from safetensors.torch import save_file

    path = tmp_path / f"{stem}.safetensors"
    save_file({k: v.contiguous() for k, v in CifarResNet(8, "B").state_dict().items()}, str(path))
    if data is not None:
        path.write_bytes(data)
    reg = {"name": stem, "depth": 8, "shortcut": "B", "file_name": path.name,
           "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **registry}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps({"registry": reg}))
    return path


def test_a_corrupt_weights_file_is_a_clear_error(tmp_path):
    """A truncated model file whose sidecar checksum matches it, and a pytorchcv zip that is no zip,
    are ValueErrors naming the file (the command line's exit 2), not a library's traceback."""
    good = _model_file(tmp_path, "good")
    assert len(linstab.load_model(str(good)).units) == 3
    cut = _model_file(tmp_path, "cut", good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.safetensors is not a readable safetensors file"):
        linstab.load_model(str(cut))
    bad_zip = tmp_path / "resnet20_cifar10-0597-9b0024ac.pth.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a readable zip file"):
        build_from_spec(REGISTRY["resnet20-pytorchcv"], bad_zip)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", None), ("name", 5), ("depth", "abc"), ("depth", 9), ("sha256", None), ("shortcut", 2),
     ("shortcut", "C")],
)  # fmt: skip
def test_a_damaged_sidecar_is_named(tmp_path, field, value):
    """A sidecar whose record has a field of the wrong type is refused, naming the sidecar and the field."""
    path = _model_file(tmp_path, "net", **{field: value})
    with pytest.raises(ValueError, match=rf"net\.json: damaged 'registry' record: {field} "):
        linstab.load_model(str(path))


def test_a_model_file_with_tensors_of_another_shape_is_named(tmp_path):
    """Keys that fit the sidecar's architecture but shapes that do not (a 100-class head)."""
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in CifarResNet(8, "B").state_dict().items()}
    sd["output.weight"], sd["output.bias"] = torch.zeros(100, 64), torch.zeros(100)
    save_file(sd, str(tmp_path / "wide.bin"))
    path = _model_file(tmp_path, "wide", (tmp_path / "wide.bin").read_bytes())
    with pytest.raises(
        ValueError, match=r"wide\.safetensors does not fit .*output\.weight: file \(100, 64\)"
    ):
        linstab.load_model(str(path))


def test_a_damaged_pytorch_checkpoint_is_a_value_error(tmp_path):
    """Truncated or junk ``.th``/``.pth`` files (read without a checksum through the public
    ``load_state_dict_file``) are ValueErrors naming the file, not torch's EOFError or
    UnpicklingError."""
    whole = tmp_path / "whole.th"
    torch.save(
        {"state_dict": {"conv1.weight": torch.randn(16, 3, 3, 3), "linear.bias": torch.randn(10)}}, whole
    )
    cut = tmp_path / "cut.th"
    cut.write_bytes(whole.read_bytes()[:3000])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 8)
    for path, fmt in ((cut, "akamaster"), (junk, "pytorchcv"), (junk, "state_dict")):
        with pytest.raises(ValueError, match=rf"{path.name} is not a readable PyTorch checkpoint"):
            models.load_state_dict_file(path, fmt)
    assert set(models.load_state_dict_file(whole, "akamaster")) == {
        "features.init_block.conv.weight",
        "output.bias",
    }


def test_load_state_dict_file_checks_its_format_and_entries(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(CifarResNet(8, "B").state_dict(), path)
    with pytest.raises(ValueError, match=r"fmt must be one of .*got 'pth'"):
        models.load_state_dict_file(path, "pth")
    torch.save({"conv.weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"entries that are not: \['epoch'\]"):
        models.load_state_dict_file(path, "state_dict")


@pytest.mark.parametrize(
    "key",
    ["layerX.0.conv1.weight", "layer1.0.shortcut.x.weight", "layer1.0.conv1", "conv1", "layer1.a.bn1.bias"],
)
def test_malformed_akamaster_keys_are_named(key):
    """Keys of another layout are refused with the expected forms, not mapped to a key ending
    in a dot or failing inside int()."""
    with pytest.raises(ValueError, match=rf"unexpected akamaster key '{key}': expected conv1\.\*"):
        models.convert_akamaster_state_dict({key: torch.zeros(1)})


def test_weights_argument_of_the_wrong_kind(tmp_path, monkeypatch):
    spec = REGISTRY["resnet20-akamaster"]
    with pytest.raises(ValueError, match="is a folder; expected the weights file"):
        resolve_weights(spec, tmp_path)
    with pytest.raises(TypeError, match="weights must be a file path .*got int 5"):
        linstab.load_model("resnet20-akamaster", weights=5)


@pytest.mark.parametrize(
    ("exists", "note"),
    [(False, "LINSTAB_WEIGHTS_DIR={} is not a folder."), (True, "It is not in LINSTAB_WEIGHTS_DIR={}.")],
)
def test_missing_weights_name_the_weights_dir(tmp_path, monkeypatch, exists, note):
    """A LINSTAB_WEIGHTS_DIR that does not exist, or lacks the file, is said in the message."""
    wdir = tmp_path / "weights"
    if exists:
        wdir.mkdir()
    monkeypatch.setenv("LINSTAB_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("LINSTAB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=re.escape(note.format(wdir))):
        resolve_weights(REGISTRY["resnet20-akamaster"], download=False)
