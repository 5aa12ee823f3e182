"""Figures. Plotting never selects a matplotlib backend: figures are built with
``matplotlib.figure.Figure`` (no pyplot) and always written to a path the caller gives.
"""

from __future__ import annotations

from pathlib import Path

from ..io.profile import timed

__all__ = ["save_figure"]


def save_figure(
    fig, out: str | Path, formats: tuple[str, ...] = ("png", "svg"), dpi: int = 150
) -> list[Path]:
    """Save a figure as ``out`` with each suffix in ``formats``; returns the written paths.

    ``out`` may carry a suffix (it is replaced) or not. Parent folders are created.
    """
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".svg", ".pdf") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with timed("plot", name=stem.name):
        for fmt in formats:
            path = stem.with_suffix("." + fmt)
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
            paths.append(path)
    return paths
