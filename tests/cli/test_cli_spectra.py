"""The spectrum, bands and figure commands (linstab.cli.spectra) end to end on a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import tiny_image

from linstab import spectra as S

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def test_cli_commands(nets, tmp_path, monkeypatch):
    import linstab.cli as cli
    import linstab.cli.common as common

    net = nets["option-A"]
    monkeypatch.setattr(common, "network_from_args", lambda args: net)
    imgs = torch.stack([tiny_image(i) for i in range(3)])
    monkeypatch.setattr(
        common,
        "images_from_args",
        lambda args, net=None: (
            imgs[:1] if getattr(args, "images", None) is None else imgs,
            None,
            ["a", "b", "c"],
        ),
    )
    monkeypatch.setattr(common, "networks_from_args", lambda args: [net])
    out = tmp_path / "u.npz"
    assert cli.main(["spectrum", "--unit", "1.2", "--out", str(out)]) == 0
    back = S.SpectrumResult.load(out)
    assert back.info["component"] == "unit 1.2" and back.k == 256
    assert (
        cli.main(
            [
                "spectrum",
                "--stage",
                "3",
                "--method",
                "topk",
                "--k",
                "4",
                "--vectors",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "s.npz") as z:
        assert z["u"].shape == (64, 4) and z["v"].shape == (128, 4)
    assert cli.main(["bands", "--out", str(tmp_path / "b.csv")]) == 0
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 1 + len(net.units)
    f2 = str(tmp_path / "f2")
    assert cli.main(["figure", "bands", "--out", f2, "--csv", f2 + ".csv"]) == 0
    assert (tmp_path / "f2.png").exists() and (tmp_path / "f2.svg").exists()
    assert (
        cli.main(
            ["figure", "scree", "--out", str(tmp_path / "f1"), "--stage-method", "topk", "--stage-k", "8"]
        )
        == 0
    )
    assert (tmp_path / "f1.png").exists() and (tmp_path / "f1.svg").exists()
    assert cli.main(["spectrum", "--unit", "1.2", "--method", "topk", "--k", "0", "--out", str(out)]) == 2
