"""The command runs as ``python -m linstab.cli`` and ``python -m linstab.cli.main`` too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from linstab import __version__


@pytest.mark.parametrize("module", ["linstab.cli", "linstab.cli.main"])
def test_module_entry_points_run_the_command(module):
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"linstab {__version__}"
    done = subprocess.run([sys.executable, "-m", module, "spectrum"], capture_output=True, text=True)
    assert done.returncode == 2 and "required" in done.stderr
