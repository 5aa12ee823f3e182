"""Thread counts of linstab's dense kernels (torch's setting, or ``$LINSTAB_BLAS_THREADS``)."""

from __future__ import annotations

import os

import torch


def blas_threads() -> int:
    """Threads for linstab's dense kernels: ``$LINSTAB_BLAS_THREADS``, else torch's setting."""
    env = os.environ.get("LINSTAB_BLAS_THREADS")
    return int(env) if env and env.isdigit() and int(env) > 0 else torch.get_num_threads()


class torch_threads:  # noqa: N801 - used like a function
    """Context manager: run with ``n`` torch threads (``None``: unchanged), then restore."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
        return False
