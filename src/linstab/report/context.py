"""The report's configuration, findings, sections and the context that writes data files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.cache import ResultCache
from ..io.tables import write_csv


@dataclass
class ReportConfig:
    """What the report computes.

    Attributes:
        models: registry names (one or two; the first is the main model).
        images: default-image indices used for per-image statistics.
        quick: fewer images, top-k instead of full stage spectra, fewer attacks.
        attacks: attacks for the propagation section.
        out: output folder.
        cache_dir: cache folder (``None``: default).
        use_cache: read and write the cache.
        seed: seed for random perturbations, ablation noise and frames.
    """

    models: list[str]
    images: list[int]
    quick: bool = False
    attacks: tuple[str, ...] = ("fgsm", "pgd", "deepfool", "cw")
    out: Path = Path("linstab-report")
    cache_dir: Path | None = None
    use_cache: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class Finding:
    """One line of the findings table: the paper's claim, what was measured, the verdict."""

    section: str
    claim: str
    measured: str
    verdict: str  # "reproduced", "not reproduced", "partly", "n/a"


@dataclass
class Section:
    """One section of the report: title, text, figures, tables and its run time."""

    title: str
    figures: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    seconds: float = 0.0


class ReportContext:
    """Shared state while building a report."""

    def __init__(self, cfg: ReportConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.fig_dir = self.out / "figures"
        self.data_dir = self.out / "data"
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache = ResultCache(cfg.cache_dir, enabled=cfg.use_cache)
        self.findings: list[Finding] = []
        self.sections: list[Section] = []
        self.timings: dict[str, float] = {}

    def rel(self, path: Path) -> str:
        """``path`` relative to the report folder."""
        return str(Path(path).relative_to(self.out))

    def write_csv(self, name: str, rows: list[dict]) -> str:
        """Write rows to ``data/name``; returns the relative path."""
        return self.rel(write_csv(rows, self.data_dir / name))

    def write_npz(self, name: str, **arrays) -> str:
        """Write arrays to ``data/name``; returns the relative path."""
        path = self.data_dir / name
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.rel(path)

    def progress(self, it, desc: str, total: int | None = None):
        """``it`` wrapped in a progress bar when the report shows progress."""
        if not self.cfg.progress:
            return it
        from tqdm.auto import tqdm

        return tqdm(it, desc=desc, total=total, leave=False)


def fmt(x: float, digits: int = 3) -> str:
    """A number for the report's text (``digits`` significant digits, NaN as ``n/a``)."""
    return f"{x:.{digits}g}"


SECTIONS = ("jacobian", "spectra", "propagation", "ablations", "dynamics")
