"""The ``environment`` record written into every benchmark JSON."""

from __future__ import annotations

import datetime as _dt
import os
import platform

import numpy as np
import scipy
import torch


def environment() -> dict:
    """Versions, machine and thread settings of this run."""
    import linstab

    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "linstab": linstab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
