"""Devices are checked before any work: unknown names, CUDA without a GPU, bad types."""

from __future__ import annotations

import pytest
import torch
from factories import make_net

from linstab.cli import main
from linstab.models.device import resolve_device
from linstab.report import ReportConfig, build_report

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: CUDA is not refused")


def test_cpu_and_default():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None, auto=True).type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu0", "tpu", "meta"])
def test_unknown_or_unsupported_device_names(bad):
    with pytest.raises(ValueError, match="cpu"):
        resolve_device(bad)


def test_bad_type():
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(0)


@no_cuda
def test_cuda_refused_without_a_gpu():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


def test_network_to_moves_and_returns_itself():
    net = make_net("option-B", seed=0)
    assert net.to("cpu") is net and net.device == torch.device("cpu")


@no_cuda
def test_report_refuses_cuda_before_any_work(tmp_path):
    out = tmp_path / "report"
    cfg = ReportConfig(models=["resnet20-linstab"], images=[0], out=out, device="cuda", use_cache=False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        build_report(cfg)
    assert not out.exists()


def test_report_refuses_networks_on_another_device(tmp_path):
    net = make_net("option-A", seed=0)
    cfg = ReportConfig(models=[], images=[0], out=tmp_path / "r", device="cuda:0", use_cache=False)
    with pytest.raises(ValueError):
        build_report(cfg, nets=[net])
    assert not (tmp_path / "r").exists()


@no_cuda
def test_cli_says_why(tmp_path, capsys):
    rc = main(["report", "--device", "cuda", "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "linstab report: error" in err and "CUDA is not available" in err
