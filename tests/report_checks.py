"""Shared checks of the report tests: every finding's fields, and the page in headless Chromium."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

from linstab.report.rules import VERDICTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def images_loaded(index: Path, tmp: Path) -> str:
    """Open the page offline in headless Chromium; return 'loaded/total' images and screenshot."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chrome-profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    shot = tmp / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1200,3000", f"--screenshot={shot}", index.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's load script did not run"
    return f"{m.group(1)}/{m.group(2)}"


def check_findings(findings: list[dict], allow_single: bool = False) -> None:
    """Every finding has a statistic, a rule and a verdict; a testable one a value and an interval
    (with 2 or more images; ``allow_single``: one image, no interval and never reproduced); a not
    testable one says why.
    """
    for f in findings:
        assert f["verdict"] in VERDICTS and f["rule"] and f["statistic"], f
        if f["verdict"] == "not testable":
            assert f["why"], f  # says why instead of guessing
            continue
        assert math.isfinite(float(f["value"])) and f["images"], f
        if allow_single and f["n_images"] == "1":
            assert f["ci_low"] == "" and f["verdict"] != "reproduced", f
            continue
        low, high = float(f["ci_low"]), float(f["ci_high"])
        assert int(f["n_images"]) >= 2 and math.isfinite(low) and math.isfinite(high) and low <= high, f
        if f["test"]:
            assert 0 <= float(f["p_value"]) <= 1, f
