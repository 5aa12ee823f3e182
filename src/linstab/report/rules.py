"""Decision rules of the findings: small pure functions from statistics to a verdict.

Every rule takes an :class:`~linstab.analyses.statistics.Estimate` (a median over images with
its 95% bootstrap interval) and, for comparisons, a paired
:class:`~linstab.analyses.statistics.RankTest`, and returns a :class:`Decision`: the verdict
and the rule written out with its thresholds (it goes next to the number in ``findings.csv``).
The thresholds are the named constants below; ``docs/findings.md`` gives the reason for each.
They were fixed from the paper's wording before the numbers were looked at and are never
tuned to a result.

Verdicts: ``reproduced``, ``partly``, ``not reproduced`` and ``not testable`` (the model or the
data cannot answer the question; the reason is given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..analyses.statistics import Estimate, RankTest, min_p_value

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable"
VERDICTS: tuple[str, ...] = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE)

ALPHA = 0.05
"""Significance level of every paired / one-sample test (one-sided, in the claimed direction)."""

MOST = 0.5
"""'Most' singular values: more than half of them."""

PLATEAU_MIN = 0.10
"""A plateau exists when at least this fraction of the values lies within 1% of its height."""

NON_NEGLIGIBLE = 0.01
"""'A non-negligible number' of singular values above 1.01: at least 1% of them."""

HIGH_RANK = 0.5
"""'High rank': more than half of the singular values are non-zero."""

MEAN_ONE_TOL = 0.10
"""'A mean of 1': the mean singular value within 10% of 1."""

DRASTIC = 0.5
"""'Decreases drastically' / 'steep decrease': the fitted value falls to half or less over the stage."""

GOOD_PREDICTION = 0.10
"""'A good estimate': median relative error of the linear prediction below 10%."""

ABSENT = 0.01
"""A plateau is 'absent' when at most 1% of the values are exactly 1 (structurally)."""

WIDTH_KEPT = 0.5
"""The plateau 'moves' to alpha when it keeps at least half of its width at alpha = 1."""

MIN_TREND_UNITS = 3
"""A within-stage trend needs at least this many regular units in the stage."""

JUMP_UNITS = 3
"""'Towards the end of the stage': the last 3 units (as in Figure 4 of the paper)."""

MIN_BASELINE_UNITS = 2
"""The stage mean a jump is compared with needs at least 2 regular units before the last 3."""

TAYLOR_ORDER = 1.9
"""The Taylor test passes when the fitted order of the first-order residual is above 1.9 (order 2
expected; 5% allowance for the fit over a finite range of eps)."""

MIN_IMAGES_FOR_TEST = 5
"""With fewer images a one-sided signed-rank test cannot reach p < 0.05 (2^-4 = 0.0625)."""


@dataclass(frozen=True)
class Decision:
    """A verdict with the rule that produced it.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        rule: the decision rule with its thresholds, in words.
        why: what decided (the comparison that held or failed), or why it is not testable.
    """

    verdict: str
    rule: str
    why: str = ""


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def _ci_name(est: Estimate) -> str:
    return f"{100 * est.confidence:g}% CI"


def _ci_fails(est: Estimate, side: str) -> str:
    if math.isnan(est.low):
        return f"no interval with {est.n} image{'s' if est.n != 1 else ''}"
    return f"the CI reaches {side} ({est.low:.4g}, {est.high:.4g})"


def not_testable(why: str, rule: str = "") -> Decision:
    """The claim cannot be tested here (``why`` says what is missing)."""
    return Decision(NOT_TESTABLE, rule or "not testable", why)


def _no_data(est: Estimate, rule: str) -> Decision | None:
    if est.n == 0 or math.isnan(est.value):
        return not_testable("no finite value to test", rule)
    return None


def level_above(
    est: Estimate, threshold: float, partly_above: float | None = None, *, pct: bool = True
) -> Decision:
    """A claim that a statistic is large: ``statistic > threshold``.

    reproduced: the interval lies above ``threshold``; partly: the median is above
    ``threshold`` (the interval is not), or above ``partly_above`` when given; else not
    reproduced.
    """
    return _level(est, threshold, partly_above, pct, above=True)


def level_below(
    est: Estimate, threshold: float, partly_below: float | None = None, *, pct: bool = True
) -> Decision:
    """A claim that a statistic is small: ``statistic < threshold`` (mirror of :func:`level_above`)."""
    return _level(est, threshold, partly_below, pct, above=False)


def _level(est: Estimate, threshold: float, partly: float | None, pct: bool, above: bool) -> Decision:
    """:func:`level_above` (``above``) or :func:`level_below`: one rule, mirrored."""
    f = _pct if pct else (lambda v: f"{v:g}")
    word, beyond, other = ("above", ">", "below") if above else ("below", "<", "above")

    def past(v: float, t: float) -> bool:
        return v > t if above else v < t

    rule = (
        f"reproduced if the {_ci_name(est)} lies {word} {f(threshold)}; "
        f"partly if the median is {word} {f(threshold)}"
    )
    if partly is not None:
        rule += f" or {word} {f(partly)}"
    rule += "; else not reproduced"
    if (d := _no_data(est, rule)) is not None:
        return d
    end, bound = ("low", est.low) if above else ("high", est.high)
    if not math.isnan(bound) and past(bound, threshold):
        return Decision(REPRODUCED, rule, f"CI {end} {bound:.4g} {beyond} {threshold:g}")
    if past(est.value, threshold):
        return Decision(
            PARTLY, rule, f"median {est.value:.4g} {beyond} {threshold:g} but {_ci_fails(est, other)}"
        )
    if partly is not None and past(est.value, partly):
        span = f"({partly:g}, {threshold:g}]" if above else f"[{threshold:g}, {partly:g})"
        return Decision(PARTLY, rule, f"median {est.value:.4g} in {span}")
    last = partly if partly is not None else threshold
    return Decision(NOT_REPRODUCED, rule, f"median {est.value:.4g} {'<=' if above else '>='} {last:g}")


def directional(
    est: Estimate,
    test: RankTest,
    direction: str,
    what: str = "the per-image statistic",
    null: float = 0.0,
) -> Decision:
    """A claim that a per-image statistic (a paired difference, a ratio, a slope) is above or
    below ``null`` (0 for differences and slopes, 1 for ratios).

    reproduced: the median is on the claimed side of ``null``, its interval excludes ``null``
    and the one-sided signed-rank test in that direction gives ``p <`` :data:`ALPHA`; partly:
    the claimed side without both (with fewer than :data:`MIN_IMAGES_FOR_TEST` images
    significance is impossible, and this is said); not reproduced: the median equals ``null``
    or is on the other side.

    Args:
        est: the median over images of the statistic, with its interval.
        test: the one-sided Wilcoxon signed-rank test of the statistic against ``null``
            (``alternative`` = ``direction``).
        direction: ``"greater"`` (claim: > ``null``) or ``"less"`` (claim: < ``null``).
        what: the statistic's name in the rule text.
        null: the value of no effect.
    """
    if direction not in ("greater", "less"):
        raise ValueError(f"direction: expected 'greater' or 'less', got {direction!r}")
    sign = ">" if direction == "greater" else "<"
    rule = (
        f"reproduced if the median of {what} is {sign} {null:g}, its {_ci_name(est)} excludes {null:g} and "
        f"the one-sided Wilcoxon signed-rank test gives p < {ALPHA:g}; partly if the median is "
        f"{sign} {null:g} "
        "without both; else not reproduced"
    )
    if (d := _no_data(est, rule)) is not None:
        return d

    def beyond(v: float) -> bool:
        return v > null if direction == "greater" else v < null

    if not beyond(est.value):
        return Decision(NOT_REPRODUCED, rule, f"median {est.value:.4g} is not {sign} {null:g}")
    significant = not math.isnan(test.p_value) and test.p_value < ALPHA
    edge = est.low if direction == "greater" else est.high
    excluded = not math.isnan(edge) and beyond(edge)
    if significant and excluded:
        return Decision(
            REPRODUCED,
            rule,
            f"median {est.value:.4g} {sign} {null:g}, CI excludes it, p = {test.p_value:.3g}",
        )
    why = f"median {est.value:.4g} {sign} {null:g} but " + (
        f"p = {test.p_value:.3g} >= {ALPHA:g}" if not significant else f"the CI reaches {null:g} ({edge:.4g})"
    )
    if not significant and est.n < MIN_IMAGES_FOR_TEST:
        why += f" (with {est.n} images the smallest possible p is {min_p_value(est.n):.3g})"
    return Decision(PARTLY, rule, why)


def trend(
    slope: Estimate,
    test: RankTest,
    direction: str,
    relative_change: Estimate | None = None,
    magnitude: float | None = None,
) -> Decision:
    """A trend along units (per-image robust slopes), optionally with a size ('drastically').

    Without ``magnitude`` this is :func:`directional` on the slopes. With it (a decrease claim),
    reproduced also needs the median relative change over the stage to be ``<= -magnitude``;
    a significant decrease that is smaller is partly.
    """
    base = directional(slope, test, direction, "the per-image slope over the stage")
    if magnitude is None or relative_change is None:
        return base
    rule = (
        base.rule + f"; a reproduced decrease must also fall by at least {_pct(magnitude)} "
        f"(median relative change <= -{magnitude:g})"
    )
    if base.verdict != REPRODUCED:
        return Decision(base.verdict, rule, base.why)
    if relative_change.value <= -magnitude:
        return Decision(REPRODUCED, rule, base.why + f", relative change {relative_change.value:.3g}")
    return Decision(
        PARTLY, rule, base.why + f", but the relative change {relative_change.value:.3g} > -{magnitude:g}"
    )


def with_control(main: Decision, control: Decision, control_name: str) -> Decision:
    """A claim that must hold and also survive a control.

    reproduced: both are reproduced; partly: the main effect is reproduced but not the control,
    or the main effect is partly; not reproduced: the main effect is not reproduced; not
    testable when the main effect is not.
    """
    rule = (
        f"main effect: {main.rule}. Control ({control_name}): the same rule. "
        "Reproduced if both hold; partly if only the main effect holds"
    )
    if main.verdict == NOT_TESTABLE:
        return Decision(NOT_TESTABLE, rule, main.why)
    if main.verdict == NOT_REPRODUCED:
        return Decision(NOT_REPRODUCED, rule, "main: " + main.why)
    if main.verdict == REPRODUCED and control.verdict == REPRODUCED:
        return Decision(REPRODUCED, rule, f"main: {main.why}; control: {control.why}")
    return Decision(PARTLY, rule, f"main: {main.why}; control ({control.verdict}): {control.why}")


def all_of(decisions: list[Decision], joiner: str = "; and ") -> Decision:
    """A claim made of several parts.

    reproduced if every part is; not reproduced if no part is reproduced or partly; partly
    otherwise; not testable if any part is not testable.
    """
    if not decisions:
        raise ValueError("all_of needs at least one decision")
    rule = joiner.join(d.rule for d in decisions)
    why = "; ".join(f"{d.verdict}: {d.why}" for d in decisions)
    verdicts = {d.verdict for d in decisions}
    if NOT_TESTABLE in verdicts:
        return Decision(NOT_TESTABLE, rule, why)
    if verdicts == {REPRODUCED}:
        return Decision(REPRODUCED, rule, why)
    if verdicts == {NOT_REPRODUCED}:
        return Decision(NOT_REPRODUCED, rule, why)
    return Decision(PARTLY, rule, why)


def plateau_moves(width_ratio: Estimate, width_at_alpha: Estimate, trained_width: Estimate) -> Decision:
    """Skip scaling 'moves the plateau to alpha' (Section 3.4.1, Figure 5 left).

    Args:
        width_ratio: per image, the smallest over the tested ``alpha`` of the plateau width at
            ``alpha`` (values within 1% of ``alpha``) divided by the width at ``alpha = 1``.
        width_at_alpha: per image, the smallest plateau width at ``alpha``, as a fraction of all
            values.
        trained_width: per image, the plateau width of the trained unit (a fraction).

    not testable: the trained unit has no plateau (median width below :data:`PLATEAU_MIN`);
    reproduced: the interval of ``width_ratio`` lies above :data:`WIDTH_KEPT`; partly: the
    plateau at ``alpha`` is narrower but still a plateau (median ``width_at_alpha`` above
    :data:`PLATEAU_MIN`); else not reproduced.
    """
    rule = (
        f"not testable if the trained unit's plateau holds less than {_pct(PLATEAU_MIN)} of the values; "
        f"reproduced if the 95% CI of the smallest width ratio (plateau at alpha / plateau at 1) lies above "
        f"{WIDTH_KEPT:g}; partly if the plateau at every alpha still holds more than {_pct(PLATEAU_MIN)} "
        "of the values; else not reproduced"
    )
    if trained_width.n == 0 or math.isnan(trained_width.value) or trained_width.value < PLATEAU_MIN:
        return not_testable(
            f"the trained unit has no plateau ({100 * trained_width.value:.1f}% of values within 1% of 1)",
            rule,
        )
    if not math.isnan(width_ratio.low) and width_ratio.low > WIDTH_KEPT:
        return Decision(REPRODUCED, rule, f"width ratio CI low {width_ratio.low:.3g} > {WIDTH_KEPT:g}")
    if width_at_alpha.value > PLATEAU_MIN:
        return Decision(
            PARTLY,
            rule,
            f"width ratio {width_ratio.value:.3g} (CI low {width_ratio.low:.3g}); the plateau at alpha "
            f"still holds {100 * width_at_alpha.value:.1f}%",
        )
    return Decision(
        NOT_REPRODUCED, rule, f"plateau at alpha holds {100 * width_at_alpha.value:.1f}% of the values"
    )


def interior_maximum(rise: Decision, fall: Decision, argmax_share: float, at: float) -> Decision:
    """'The plateau takes shape as t increases until a maximum at t = ``at``, then loses width'.

    Args:
        rise: :func:`directional` on the width at ``at`` minus the width at ``t = 0``.
        fall: :func:`directional` on the width at ``at`` minus the width at ``t = 1``.
        argmax_share: the fraction of (image, seed) pairs whose widest grid point is ``at``.
        at: the claimed position of the maximum.

    reproduced: both rises are reproduced and ``at`` is the widest grid point in more than half
    of the (image, seed) pairs; partly: at least one of the two is reproduced or partly; else
    not reproduced.
    """
    both = all_of([rise, fall])
    rule = (
        both.rule + f"; and t = {at:g} is the widest grid point in more than half of the (image, seed) pairs"
    )
    why = both.why + f"; widest at t = {at:g} in {100 * argmax_share:.0f}% of the pairs"
    if both.verdict == REPRODUCED:
        return Decision(REPRODUCED if argmax_share > 0.5 else PARTLY, rule, why)
    return Decision(both.verdict, rule, why)
