"""The README's Python API example runs as written (a stale README is a bug of its own)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block(section: str) -> str:
    """The first ```python block under the ``## section`` heading of the README."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    m = re.search(r"```python\n(.*?)```", text[start:], re.S)
    if m is None:
        raise ValueError(f"no python block under '## {section}'")
    return m.group(1)


def test_the_python_api_example_runs(shared_weights, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_python_block("Python API"), "README.md", "exec"), ns)  # noqa: S102 - our own README
    J, D, A = ns["J"], ns["D"], ns["A"]
    assert J.shape == (16384, 16384) and ns["y"].shape == (16, 32, 32) and ns["z"].shape == (16, 32, 32)
    assert D.shape == (4096, 4096) and D.dtype == torch.float64 and A.shape == (16384, 16384)
    v = torch.randn(4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(D @ v, ns["lin"].unit(3, 5) @ v)
    assert ns["S"].shape == (64 * 8 * 8, 32 * 16 * 16)  # stage 3: from stage 2's output
    assert ns["N"].shape == (64 * 8 * 8, 16 * 32 * 32)  # the stem's output to the head's input
    assert ns["net"].predict(ns["images"]).argmax(1).eq(ns["labels"]).sum() >= 19
