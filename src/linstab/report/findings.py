"""Findings: built from a statistic, its interval, a test and a decision; read back from
``findings.csv`` and printed as the README's Markdown table.

``findings.csv`` (one row per finding, columns :data:`~linstab.report.context.FINDING_FIELDS`)
is the report's record of its verdicts; the README's findings table is generated from it with
``python benchmarks/findings_table.py OUT/data/findings.csv`` (:func:`findings_markdown`), never
written by hand.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..analyses.statistics import Estimate, RankTest, bootstrap_ci, wilcoxon_signed_rank
from ..io.tables import read_csv
from .context import FINDING_FIELDS, Finding
from .rules import Decision


def estimate(values, seed: int = 0) -> Estimate:
    """The median over images of per-image values (``(images,)`` or ``(images, seeds)``) with its
    95% bootstrap interval.
    """
    return bootstrap_ci(values, seed=seed)


def signed_rank(values, direction: str, null: float = 0.0, *, log: bool = False) -> RankTest:
    """The one-sided signed-rank test of per-image values against ``null`` (seed means for 2-D
    values); ``log``: test ``log(values) - log(null)`` (for ratios).
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 2:
        a = a.mean(axis=1)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.log(a) - np.log(null)
        return wilcoxon_signed_rank(a, alternative=direction)
    return wilcoxon_signed_rank(a - null, alternative=direction)


def test_text(test: RankTest | None, what: str) -> str:
    """The test column: ``Wilcoxon signed-rank (exact), one-sided greater, n=20: <what>``."""
    if test is None:
        return ""
    side = test.alternative if test.alternative == "two-sided" else f"one-sided {test.alternative}"
    return f"Wilcoxon signed-rank ({test.method}), {side}, n={test.n}: {what}"


def make_finding(
    section: str,
    claim: str,
    statistic: str,
    decision: Decision,
    est: Estimate | None = None,
    test: RankTest | None = None,
    *,
    test_what: str = "",
    images: str = "",
    measured: str = "",
) -> Finding:
    """A :class:`~linstab.report.context.Finding` from its parts.

    Args:
        section: report section.
        claim: the paper's claim.
        statistic: the statistic's definition (per image, then summarized).
        decision: the rule's verdict and text.
        est: the statistic over images with its interval.
        test: the test the rule used.
        test_what: what the test compares.
        images: which images.
        measured: the numbers in words.
    """
    nan = math.nan
    return Finding(
        section=section,
        claim=claim,
        verdict=decision.verdict,
        statistic=statistic,
        value=est.value if est is not None else nan,
        ci_low=est.low if est is not None else nan,
        ci_high=est.high if est is not None else nan,
        test=test_text(test, test_what),
        p_value=test.p_value if test is not None else nan,
        rule=decision.rule,
        why=decision.why,
        n_images=est.n if est is not None else 0,
        n_seeds=est.n_seeds if est is not None else 1,
        images=images,
        measured=measured,
    )


def read_findings(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``findings.csv`` written by the report.

    Raises:
        ValueError: when the file lacks the finding columns.
    """
    try:
        return read_csv(path, required=("section", "claim", "verdict"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a findings.csv ({exc})") from exc


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _g(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(rows: list[dict], *, rules: bool = False) -> str:
    """The findings as a Markdown table (the README's findings table).

    Columns: section, claim, statistic with its value and 95% CI, n images (x seeds), the
    test's p-value, verdict (with why); ``rules=True`` adds the decision rule.
    """
    head = ["section", "claim (the paper)", "statistic", "value [95% CI]", "n", "p", "verdict"]
    if rules:
        head.insert(6, "rule")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        v, lo, hi = (_num(r.get(k)) for k in ("value", "ci_low", "ci_high"))
        val = _g(v) if math.isnan(lo) else f"{_g(v)} [{_g(lo)}, {_g(hi)}]"
        n = str(r.get("n_images", "") or "")
        seeds = str(r.get("n_seeds", "") or "")
        if seeds not in ("", "1", "0"):
            n += f" x {seeds} seeds"
        verdict = f"**{r['verdict']}**"
        if r.get("why") and r["verdict"] == "not testable":
            verdict += f" ({r['why']})"
        cells = [
            r["section"],
            r["claim"],
            r.get("statistic", ""),
            val,
            n,
            _g(_num(r.get("p_value"))),
            verdict,
        ]
        if rules:
            cells.insert(6, r.get("rule", ""))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def findings_table(path: str | os.PathLike, *, rules: bool = False) -> str:
    """:func:`findings_markdown` of a ``findings.csv`` file."""
    return findings_markdown(read_findings(Path(path)), rules=rules)


__all__ = [
    "FINDING_FIELDS",
    "findings_markdown",
    "findings_table",
    "make_finding",
    "read_findings",
    "test_text",
]
