"""The report's configuration, findings, sections and the context that writes data files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analyses.attacks import ATTACKS
from ..analyses.network_spectra import QUICK_EXACT_MAX
from ..io.cache import ResultCache
from ..io.parallel import usable_cpus
from ..io.tables import write_csv
from ..io.validate import check_int
from ..linalg.results import EXACT_MAX

EXACT_REPORT_MAX = EXACT_MAX
"""Largest unit (output values) whose Figures 1-2 are exact in the full report: the largest
unit of the CIFAR ResNets (16 x 32 x 32). Larger units (every unit of an ImageNet ResNet at
224 x 224) get matrix-free estimates: top-k values and band counts with confidence intervals."""

BAND_ESTIMATE = {"accuracy": 0.01}
"""Options of :func:`~linstab.linalg.estimate_bands` for the report's estimated band counts
(target half-width 1% of ``n``; probes and adaptive Lanczos steps follow from it)."""


@dataclass
class ReportConfig:
    """What the report computes.

    Attributes:
        models: registry names (one or two; the first is the main model).
        images: the images: default-image indices (``[0, 1, 2]``) or a spec accepted by
            :func:`~linstab.data.select_images` (``"0-19"``, ``"jpeg:0-999"`` -- lossy, and
            labelled so --, a folder or an array file). Per-image statistics use all of them
            where the cost allows (see ``docs/findings.md``).
        quick: fewer images, top-k instead of full stage spectra, fewer attacks.
        attacks: attacks for the propagation section.
        out: output folder.
        cache_dir: cache folder (``None``: default).
        use_cache: read and write the cache.
        seed: seed for random perturbations, ablation noise and frames.
        progress: show progress bars.
        sweep_dir: a ``linstab sweep`` output folder; when given, the per-unit band fractions
            of Figure 2 and their trends come from its Parquet rows (all the images it holds)
            instead of being computed here (see :func:`linstab.report.sweep.sweep_band_rows`).
        seeds: repeats of every random quantity (random perturbations, the noise of the weight
            interpolation); ``None``: 3, quick 2.
        workers: processes for independent per-image work (exact spectra, band counts), one
            thread each, and (2 or more, with the spectra and propagation sections) one more
            process for the attacks of Figures 3-4 beside them; ``None``: one per usable CPU;
            1: everything in this process with the BLAS threads of torch's setting.
        weights: explicit weights files, one per model (``None`` entries: found as usual).
        input_size: ImageNet networks (``torchvision:...``): the image size (default 224);
            image files are resized and center-cropped to it.
        device: where the models run (``"cpu"``, ``"cuda"``, ``"cuda:N"``); ``None``: the CPU
            for registered models, the given networks' own device otherwise. Checked before
            any work (:func:`~linstab.models.device.resolve_device`).
        exact_max: units with more output values than this get estimates instead of exact
            spectra in the full report: the largest values (top-k) in Figure 1, band counts
            with 95% confidence intervals (SLQ with Gauss-Radau bounds, :data:`BAND_ESTIMATE`)
            in Figures 1-2; the analyses that need a whole spectrum of such a unit (ablations,
            image dependence, eigenvalues) are left out and say so. Default
            :data:`EXACT_REPORT_MAX`.
        shortcut_reference: a registered model whose down-sampling units (the first units of
            stages 2..L) are shown beside the report's models in Figure 1 and tested for the
            finding on down-sampling spectra, where the shortcut type matters. ``"auto"``: the
            option-A :data:`~linstab.models.SHORTCUT_REFERENCE` when every report model's
            down-sampling units have option-B (1x1 conv + BN) shortcuts and its weights are on
            this machine (never downloaded); ``None``: none.
    """

    models: list[str]
    images: list[int] | str
    quick: bool = False
    attacks: tuple[str, ...] = ("fgsm", "pgd", "deepfool", "cw")
    out: Path = Path("linstab-report")
    cache_dir: Path | None = None
    use_cache: bool = True
    seed: int = 0
    progress: bool = True
    sweep_dir: Path | None = None
    seeds: int | None = None
    device: str | None = None
    workers: int | None = None
    weights: list[str | None] | None = None
    input_size: int | None = None
    exact_max: int = EXACT_REPORT_MAX
    shortcut_reference: str | None = "auto"

    def __post_init__(self) -> None:
        self.models = _names("models", self.models)
        self.images = _image_spec(self.images)
        for name in ("quick", "use_cache", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")
        self.out = _folder("out", self.out)
        self.cache_dir = _folder("cache_dir", self.cache_dir, optional=True)
        self.sweep_dir = _folder("sweep_dir", self.sweep_dir, optional=True)
        check_int("seed", self.seed, 0)
        check_int("input_size", self.input_size, optional=True)
        w = self.weights
        if w is not None:
            files = isinstance(w, Sequence) and all(x is None or isinstance(x, str | os.PathLike) for x in w)
            if isinstance(w, str) or not files:
                raise TypeError(
                    f"weights must be a list of files (or None entries), one per model; got {w!r}"
                )
            self.weights = [None if x is None else str(x) for x in w]
        check_int("workers", self.workers, optional=True)
        check_int("exact_max", self.exact_max)
        r = self.shortcut_reference
        if r is not None and not (isinstance(r, str) and r.strip()):
            raise TypeError(f"shortcut_reference must be a model name, 'auto' or None, got {r!r}")
        check_int("seeds", self.seeds, optional=True)
        if isinstance(self.attacks, str) or not isinstance(self.attacks, Iterable):
            raise TypeError(f"attacks must be a sequence of attack names, got {self.attacks!r}")
        self.attacks = tuple(self.attacks)
        if not all(isinstance(a, str) for a in self.attacks):
            raise TypeError(f"attacks must be a sequence of attack names, got {self.attacks!r}")
        if not self.attacks:
            raise ValueError(
                f"attacks: expected at least one of {', '.join(ATTACKS)} (the propagation section compares "
                "them with random noise), got none; to skip that section, leave it out of the sections"
            )
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; choose from {', '.join(ATTACKS)}")
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError(f"attacks: each attack once, got {list(self.attacks)}")

    def estimated(self, unit) -> bool:
        """Whether the full report estimates ``unit`` (more than :attr:`exact_max` outputs)."""
        return not self.quick and unit.n_out > self.exact_max

    @property
    def whole_spectrum_max(self) -> int:
        """Most output values of a unit whose whole spectrum (or exact band counts) the report
        computes at several skip scales and weights (ablations, image dependence):
        :attr:`exact_max`; quick: ``2 * QUICK_EXACT_MAX``, the largest units with quick band counts.
        """
        return 2 * QUICK_EXACT_MAX if self.quick else self.exact_max

    def estimated_units(self, net) -> list[str]:
        """Addresses of the units of ``net`` the report estimates (:meth:`estimated`)."""
        return [u.address for u in net.units if self.estimated(u)]

    @property
    def n_workers(self) -> int:
        """Worker processes for per-image work (:attr:`workers`, default one per usable CPU)."""
        return self.workers if self.workers is not None else usable_cpus()

    @property
    def n_seeds(self) -> int:
        """Repeats of every random quantity."""
        return self.seeds if self.seeds is not None else (2 if self.quick else 3)


FINDING_FIELDS: tuple[str, ...] = (
    "section",
    "claim",
    "verdict",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "test",
    "p_value",
    "rule",
    "why",
    "n_images",
    "n_seeds",
    "images",
    "measured",
)
"""Columns of ``findings.csv``, in order."""


@dataclass
class Finding:
    """One line of the findings table: the paper's claim, the statistic that tests it, the
    decision rule and the verdict.

    Attributes:
        section: report section (and model, with several models).
        claim: the paper's claim (with its place in the paper).
        verdict: ``reproduced``, ``partly``, ``not reproduced`` or ``not testable``.
        statistic: what was measured per image and how it is summarized.
        value: the statistic (median over images unless the statistic says otherwise).
        ci_low, ci_high: its 95% bootstrap interval over images (and seeds); NaN when not
            available (fewer than 2 images).
        test: the paired / one-sample test, when the rule uses one.
        p_value: its p-value (NaN without a test).
        rule: the decision rule with its thresholds.
        why: what decided the verdict, or why the claim is not testable.
        n_images: images the statistic rests on.
        n_seeds: repeats per image of the random quantities (1 when there is no randomness).
        images: which images (ids, lossy ones say so).
        measured: the numbers in words (per stage, per condition).
    """

    section: str
    claim: str
    verdict: str
    statistic: str = ""
    value: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    test: str = ""
    p_value: float = float("nan")
    rule: str = ""
    why: str = ""
    n_images: int = 0
    n_seeds: int = 1
    images: str = ""
    measured: str = ""

    def row(self) -> dict:
        """The finding as a ``findings.csv`` row."""
        return {k: getattr(self, k) for k in FINDING_FIELDS}


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
        self.image_ids: list[str] = []
        self.lossy = False
        self.band_memo: dict[str, dict] = {}  # band rows of this run by cache key (also without a cache)
        self.prefetch: dict = {}  # section name -> CachePrefetch started beside earlier sections
        self._model_keys: dict[int, tuple] = {}  # id(net) -> (net, fingerprint) for this run

    def model_key(self, net) -> str:
        """``net.fingerprint()``, computed once per network and report (the report never
        changes a network; hashing the state dict's tensor list for each of a run's ~2000 cache
        keys took seconds of a cached rerun).
        """
        got = self._model_keys.get(id(net))
        if got is None or got[0] is not net:
            got = self._model_keys[id(net)] = (net, net.fingerprint())
        return got[1]

    def images_text(self, n: int | None = None, ids: list[str] | None = None) -> str:
        """Which images a table, figure or finding used: the first ``n`` of the report's images
        (or ``ids``), compactly (``cifar10-test-0..19 (20 images, lossless)``).
        """
        use = list(ids) if ids is not None else self.image_ids[: (len(self.image_ids) if n is None else n)]
        return describe_images(use)

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

    def bar(self, total: int, desc: str):
        """A progress bar with ``update()`` and ``close()`` (inert without progress)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=not self.cfg.progress)


def _names(name: str, value) -> list[str]:
    """``value`` as a list of model names, after checking that it is a sequence of non-empty strings."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of model names (e.g. ['resnet56-linstab']); got {value!r}")
    bad = [v for v in value if not (isinstance(v, str) and v.strip())]
    if bad:
        raise TypeError(f"{name} must be a list of non-empty model names; got {bad[0]!r} in {list(value)!r}")
    return list(value)


def _image_spec(value) -> list[int] | str:
    """``value`` as the report's images: a spec string (a path given as a ``Path`` is one) or a
    list of default-image indices (ints >= 0; no bools or floats).
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        return value
    if not isinstance(value, Sequence):
        shown = " ".join(repr(value).split())[:60]
        raise TypeError(
            "images must be default-image indices (e.g. [0, 1, 2]) or a spec string (e.g. '0-19', "
            f"'jpeg:0-99', a folder or an array file); got {type(value).__name__} {shown}"
        )
    return [check_int("images: each index", i, 0) for i in value]


def _folder(name: str, value, optional: bool = False) -> Path | None:
    """``value`` as a folder ``Path``, after checking that it is a non-empty path."""
    if value is None and optional:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        expected = "a folder path" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {expected}; got {value!r}")
    return Path(value).expanduser()


def describe_images(ids: list[str]) -> str:
    """A compact description of image ids: consecutive numbered ids are shown as a range, and
    lossy (JPEG) images are marked.
    """
    if not ids:
        return "no images"
    lossy = any("lossy" in i for i in ids)
    clean = [i.replace(" (lossy)", "") for i in ids]
    prefix = clean[0].rstrip("0123456789")
    nums = [c[len(prefix) :] for c in clean]
    if prefix and all(c.startswith(prefix) and n.isdigit() for c, n in zip(clean, nums, strict=True)):
        vals = [int(n) for n in nums]
        parts, start = [], vals[0]
        for a, b in zip(vals, [*vals[1:], None], strict=True):
            if b != a + 1:
                parts.append(f"{start}" if start == a else f"{start}..{a}")
                start = b
        text = f"{prefix}{','.join(parts)}"
    else:
        text = ", ".join(clean[:6]) + (f", ... ({len(clean)})" if len(clean) > 6 else "")
    return f"{text} ({len(ids)} image{'s' if len(ids) != 1 else ''}, {'lossy JPEG' if lossy else 'lossless'})"


def fmt(x: float, digits: int = 3) -> str:
    """A number for the report's text (``digits`` significant digits, NaN as ``n/a``)."""
    return f"{x:.{digits}g}"


SECTIONS = ("jacobian", "spectra", "propagation", "ablations", "dynamics")
