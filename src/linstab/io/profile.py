"""Opt-in timing records of long computations: what ran, in which context, for how long.

Nothing is recorded unless a :func:`profiling` block is active, so the instrumented code pays
one context-variable lookup per call otherwise. Code marks its work with :func:`timed`
(``with timed("spectrum", route="gram"): ...``) or reports a measured time with :func:`record`;
callers attach context labels with :func:`scope` (``with scope(section="spectra",
image="cifar10-test-0"): ...``) and every record made inside carries them.

A :class:`Profile` sums the records by any labels (:meth:`Profile.summary`) and writes itself
as JSON. Records of the same ``category`` never nest (each category names leaf work: a
spectrum, a band count, an attack, a plot), so sums over categories do not double count.

Example::

    with profiling() as prof:
        build_report(cfg)
    prof.summary(("section", "category"))
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_PROFILE: contextvars.ContextVar[Profile | None] = contextvars.ContextVar("linstab_profile", default=None)
_LABELS: contextvars.ContextVar[tuple] = contextvars.ContextVar("linstab_profile_labels", default=())
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("linstab_profile_depth", default=0)


@dataclass
class Record:
    """One timed piece of work.

    Attributes:
        category: the kind of work (``"spectrum"``, ``"bands"``, ``"attack"``, ``"plot"``, ...).
        seconds: wall time.
        labels: its context (the enclosing :func:`scope` labels and its own).
        parts: optional sub-timings (seconds) reported by the work itself.
        nested: made inside another :func:`timed` block (its time is part of that record's).
    """

    category: str
    seconds: float
    labels: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)
    nested: bool = False

    def to_dict(self) -> dict:
        """The record as a JSON-able dict."""
        return {
            "category": self.category,
            "seconds": self.seconds,
            **self.labels,
            "parts": self.parts,
            "nested": self.nested,
        }


class Profile:
    """The records of one :func:`profiling` block."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.started = time.perf_counter()
        self.seconds = 0.0

    def summary(
        self, by: tuple[str, ...] = ("category",), category: str | None = None, outer_only: bool = True
    ) -> list[dict]:
        """Seconds and counts summed over records with equal values of the labels ``by``.

        Args:
            by: label names (``"category"`` is one); a record without a label groups under ``None``.
            category: only records of this category.
            outer_only: skip nested records (so that no time is counted twice).

        Returns:
            one dict per group (the ``by`` labels, ``seconds``, ``count``), largest first.
        """
        if isinstance(by, str):
            raise TypeError(f"by must be a tuple of label names, got the string {by!r}")
        groups: dict[tuple, dict] = {}
        for r in self.records:
            if (category is not None and r.category != category) or (outer_only and r.nested):
                continue
            lab = {"category": r.category, **r.labels}
            key = tuple(lab.get(b) for b in by)
            g = groups.setdefault(key, {**dict(zip(by, key, strict=True)), "seconds": 0.0, "count": 0})
            g["seconds"] += r.seconds
            g["count"] += 1
        out = sorted(groups.values(), key=lambda g: -g["seconds"])
        for g in out:
            g["seconds"] = round(g["seconds"], 4)
        return out

    def parts(self, category: str, by: tuple[str, ...] = ()) -> list[dict]:
        """The records' sub-timings (``parts``) of ``category`` summed per group of ``by`` labels."""
        groups: dict[tuple, dict] = {}
        for r in self.records:
            if r.category != category:
                continue
            lab = {"category": r.category, **r.labels}
            key = tuple(lab.get(b) for b in by)
            g = groups.setdefault(key, {**dict(zip(by, key, strict=True)), "count": 0})
            g["count"] += 1
            for k, v in r.parts.items():
                if isinstance(v, int | float):
                    g[k] = round(g.get(k, 0.0) + float(v), 4)
        return sorted(groups.values(), key=lambda g: -g["count"])

    def total(self, category: str | None = None) -> float:
        """Seconds summed over the outer records (of ``category``)."""
        return sum(r.seconds for r in self.records if not r.nested and category in (None, r.category))

    def to_dict(self) -> dict:
        """All records and the wall time of the block."""
        return {"seconds": self.seconds, "records": [r.to_dict() for r in self.records]}


@contextmanager
def profiling() -> Iterator[Profile]:
    """Record the :func:`timed` work done inside the block into a new :class:`Profile`."""
    prof = Profile()
    token = _PROFILE.set(prof)
    try:
        yield prof
    finally:
        prof.seconds = time.perf_counter() - prof.started
        _PROFILE.reset(token)


def active() -> bool:
    """Whether a :func:`profiling` block is recording."""
    return _PROFILE.get() is not None


@contextmanager
def scope(**labels) -> Iterator[None]:
    """Attach ``labels`` to every record made inside the block (inner scopes override)."""
    token = _LABELS.set((*_LABELS.get(), *labels.items()))
    try:
        yield
    finally:
        _LABELS.reset(token)


def record(category: str, seconds: float, parts: dict | None = None, **labels) -> None:
    """Add a record of ``seconds`` measured by the caller (no-op unless profiling)."""
    prof = _PROFILE.get()
    if prof is None:
        return
    labels = {**dict(_LABELS.get()), **labels}
    prof.records.append(Record(category, float(seconds), labels, dict(parts or {}), _DEPTH.get() > 0))


@contextmanager
def timed(category: str, **labels) -> Iterator[dict]:
    """Time the block as one record of ``category``; the yielded dict collects labels or
    ``parts`` learned inside (``info["route"] = ...``, ``info["parts"] = {...}``).
    """
    if _PROFILE.get() is None:
        yield {}
        return
    info: dict = {}
    t0 = time.perf_counter()
    depth = _DEPTH.set(_DEPTH.get() + 1)
    try:
        with scope(**labels):
            yield info
    finally:
        _DEPTH.reset(depth)
        parts = info.pop("parts", None)
        record(category, time.perf_counter() - t0, parts, **labels, **info)


def profile_summary(prof: Profile, top: int = 40) -> dict:
    """The standard views of a profile as a JSON-able dict.

    Keys: ``seconds`` (wall time of the block), ``by_category`` (outer records),
    ``by_section`` (section x category), ``by_figure`` (section x figure x category),
    ``spectra_by_panel`` (spectrum records per figure panel), ``spectrum_parts_by_route``
    (the solvers' own sub-timings: materialize, gram, eig, ...), ``bands_by_unit``,
    ``attacks`` and the ``top`` longest records.
    """
    recs = sorted((r for r in prof.records if not r.nested), key=lambda r: -r.seconds)[:top]
    return {
        "seconds": round(prof.seconds, 3),
        "accounted_s": round(prof.total(), 3),
        "by_category": prof.summary(("category",)),
        "by_section": prof.summary(("section", "category")),
        "by_figure": prof.summary(("section", "figure", "category")),
        "spectra_by_panel": prof.summary(
            ("model", "figure", "panel", "method", "route"), category="spectrum"
        ),
        "spectrum_parts_by_route": prof.parts("spectrum", ("method", "route", "n")),
        "bands_by_unit": prof.summary(("figure", "unit", "route"), category="bands", outer_only=False),
        "attacks": prof.summary(("section", "model", "attack"), category="attack"),
        "top_records": [r.to_dict() for r in recs],
    }
