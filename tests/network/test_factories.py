"""Model factories ``module:function`` as ``--model`` / ``linstab.load_model`` names: a module in
the current folder (found without leaving ``sys.path`` changed), the CLI end to end, every error."""

from __future__ import annotations

import csv
import itertools
import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
from factories import make_net, tiny_image

import linstab
from linstab.cli.main import main
from linstab.network import call_factory, import_factory, is_factory_spec
from linstab.sweep import ModelSpec, factory_model, get_network, registry_model

BUILD = """
import torch
from factories import make_net
from torch import nn

import linstab


def build():
    return make_net("option-B", seed=3, hw=32)


def small():
    return make_net("option-B", seed=3)


def unnamed():
    net = make_net("option-B", seed=3, hw=32)
    return linstab.Network(net.model, input_shape=(3, 32, 32))


def bare():
    return make_net("option-B", seed=3, hw=32).model


def number():
    return 42


def broken():
    raise RuntimeError("no GPU here")


class Zoo:
    @staticmethod
    def small():
        return make_net("option-A", seed=1, hw=32)


NOT_CALLABLE = 3
"""

_COUNTER = itertools.count()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One torch thread (shared fixture in conftest)."""


@pytest.fixture
def mod(tmp_path, monkeypatch):
    """A fresh module (unique name) of factories written into the current folder ``tmp_path``;
    ``sys.path`` without the current folder (as in the ``linstab`` console script)."""
    name = f"userfactories{os.getpid()}_{next(_COUNTER)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(BUILD))
    monkeypatch.chdir(tmp_path)
    cwd = str(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", cwd)])
    yield name
    sys.modules.pop(name, None)


def _path_unchanged(before: list[str]) -> None:
    assert sys.path == before, "the current folder was left on sys.path"


def test_a_factory_in_the_current_folder_loads_and_sys_path_is_restored(mod, tmp_path):
    before = list(sys.path)
    net = linstab.load_model(f"{mod}:build")
    _path_unchanged(before)
    ref = make_net("option-B", seed=3, hw=32)
    assert isinstance(net, linstab.Network)
    assert net.name == "option-B"  # the factory's own name
    assert net.state_sha256() == ref.state_sha256()
    assert net.sha256 is None and net.spec is None  # no weights file, no registry entry
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.predict(x), ref.predict(x))
    # a network the factory did not name is named by the spec; dotted attributes work
    assert linstab.load_model(f"{mod}:unnamed").name == f"{mod}:unnamed"
    assert linstab.load_model(f"{mod}:Zoo.small").name == "option-A"
    _path_unchanged(before)
    assert is_factory_spec(f"{mod}:build") and not is_factory_spec("torchvision:resnet18")
    assert not is_factory_spec("resnet20-linstab") and not is_factory_spec("runs/a:b.safetensors")


def test_the_current_folder_is_not_added_twice_or_removed_when_already_there(mod, tmp_path):
    sys.path.insert(0, str(tmp_path))
    before = list(sys.path)
    assert linstab.load_model(f"{mod}:build").name == "option-B"
    assert sys.path == before


def test_cli_info_and_an_analysis_with_a_factory(mod, tmp_path, capsys):
    spec = f"{mod}:build"
    before = list(sys.path)
    assert main(["info", "--model", spec]) == 0
    out = capsys.readouterr().out
    net = make_net("option-B", seed=3, hw=32)
    assert out.splitlines()[0] == f"option-B: {len(net.units)} units in {len(net.stages)} stages"
    assert all(f" {u.address} " in out for u in net.units)

    assert main(["jacobian-test", "--model", spec, "--image", "0", "--unit", "2.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "2.1" and result["passed"] is True
    assert result["provenance"]["model"] == "option-B"  # on the factory's network
    assert result["provenance"]["state_sha256"] == net.state_sha256()
    _path_unchanged(before)


def test_cli_sweep_with_a_factory_name(mod, tmp_path, capsys):
    images = tmp_path / "imgs.npy"
    np.save(images, torch.stack([tiny_image(0), tiny_image(1)]).numpy())  # 8 x 8: seconds
    out = tmp_path / "sweep"
    args = ["sweep", "--model", f"{mod}:small", "--images", str(images), "--analyses", "bands"]
    assert main([*args, "--workers", "0", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["models"]["option-B"]
    assert record["factory"] == f"{mod}:small" and record["registry"] is None
    assert record["sha256"] == make_net("option-B", seed=3).state_sha256()


def test_the_sweep_spec_of_a_factory_name_rebuilds_the_same_network(mod):
    spec = registry_model(f"{mod}:build")
    assert spec == ModelSpec(
        name="option-B",
        factory=f"{mod}:build",
        sha256=make_net("option-B", seed=3, hw=32).state_sha256(),
    )
    assert get_network(spec, cache=False).state_sha256() == spec.sha256
    assert factory_model("tiny", "factories:make_net", kind="option-A").factory == "factories:make_net"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (":build", "both parts"),
        ("{mod}:", "both parts"),
        ("{mod}:build:x", "one colon"),
        ("./models.py:build", "module name, not a file path.*'models:build'"),
        ("models.py:build", "module name, not a file path"),
        ("sub/models:build", "module name, not a file path"),
        ("no_such_module_xyz:build", "module 'no_such_module_xyz' not found.*current folder"),
        ("{mod}.sub:build", "module '{mod}.sub' not found"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:Zoo.missing", "'{mod}.Zoo' has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "NOT_CALLABLE is a int, not a function"),
        ("{mod}:build-it", "not a function name"),
    ],
)
def test_malformed_or_missing_factories_are_refused(mod, spec, match):
    before = list(sys.path)
    with pytest.raises(ValueError, match=match.format(mod=mod)):
        linstab.load_model(spec.format(mod=mod))
    _path_unchanged(before)


def test_a_factory_that_raises_or_returns_no_network_is_refused(mod):
    with pytest.raises(ValueError, match=rf"model factory '{mod}:broken' raised RuntimeError: no GPU") as exc:
        linstab.load_model(f"{mod}:broken")
    assert isinstance(exc.value.__cause__, RuntimeError)
    wrap = r"linstab\.Network\(model, mean, std, input_shape=\(C, H, W\), name=\.\.\.\)"
    with pytest.raises(TypeError, match=rf"bare TinyCifarResNet(.|\n)*{wrap}"):
        linstab.load_model(f"{mod}:bare")
    with pytest.raises(TypeError, match="must return a linstab.Network, got int"):
        linstab.load_model(f"{mod}:number")
    with pytest.raises(TypeError, match="must return a linstab.Network, got int"):
        call_factory(f"{mod}:number")


def test_a_module_that_fails_to_import_is_reported_with_its_error(tmp_path, monkeypatch):
    name = f"badfactories{os.getpid()}_{next(_COUNTER)}"
    (tmp_path / f"{name}.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"importing module '{name}' raised ModuleNotFoundError(.|\n)*xyz"):
        import_factory(f"{name}:build")
    sys.modules.pop(name, None)


def test_weights_and_input_size_are_refused_before_the_factory_runs(mod, tmp_path, capsys):
    spec = f"{mod}:build"
    with pytest.raises(ValueError, match="builds its own weights"):
        linstab.load_model(spec, weights=tmp_path / "w.pt")
    with pytest.raises(ValueError, match="input_size applies to ImageNet networks.*input_shape"):
        linstab.load_model(spec, input_size=64)
    assert mod not in sys.modules  # refused before the import
    assert main(["info", "--model", spec, "--weights", str(tmp_path / "w.pt")]) == 2
    assert "builds its own weights" in capsys.readouterr().err
    assert main(["info", "--model", "./models.py:build"]) == 2
    assert "not a file path" in capsys.readouterr().err


def test_the_unknown_model_hint_names_factories():
    with pytest.raises(ValueError, match="factory 'module:function'"):
        linstab.load_model("model.pt")


def test_cli_report_with_a_factory_end_to_end(mod, tmp_path, capsys):
    """``linstab report --model module:function``: the factory's network is analysed (also by the
    forked workers), its name and state checksum are in the record, and ``sys.path`` is restored."""
    images = tmp_path / "imgs.npy"
    np.save(images, torch.stack([tiny_image(0), tiny_image(1)]).numpy())
    before = list(sys.path)
    out = tmp_path / "report"
    args = ["report", "--model", f"{mod}:small", "--images", str(images), "--quick", "--out", str(out)]
    args += ["--sections", "jacobian,spectra", "--workers", "2", "--no-cache", "--no-progress"]
    assert main([*args, "--no-shortcut-reference"]) == 0
    assert f"report written to {out / 'index.html'}" in capsys.readouterr().out
    _path_unchanged(before)
    env = json.loads((out / "environment.json").read_text())
    (record,) = env["models"]
    assert record == {
        "name": "option-B",
        "source": f"{mod}:small",
        "sha256": None,
        "state_sha256": make_net("option-B", seed=3).state_sha256(),
        "units": len(make_net("option-B", seed=3).units),
    }
    tests = (out / "data" / "jacobian_tests.csv").read_text().splitlines()
    assert len(tests) > 1 and "option-B" in (out / "index.html").read_text()
    assert {r["verdict"] for r in csv.DictReader((out / "data" / "findings.csv").open())}
