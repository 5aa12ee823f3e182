"""Decision rules on synthetic numbers: every rule reaches every verdict it can give."""

from __future__ import annotations

import math

import pytest

from linstab.analyses.statistics import Estimate, RankTest
from linstab.report import rules as R

NAN = math.nan


def est(value, low=NAN, high=NAN, n=10, seeds=1):
    return Estimate(value, low, high, n, seeds)


def tr(p, n=10, alternative="greater"):
    return RankTest(0.0, p, n, "exact", alternative)


def test_thresholds_are_named_and_in_range():
    assert R.ALPHA == 0.05 and R.MOST == 0.5 and 0 < R.PLATEAU_MIN < R.MOST
    assert 0 < R.NON_NEGLIGIBLE < R.PLATEAU_MIN and R.MIN_IMAGES_FOR_TEST == 5
    assert set(R.VERDICTS) == {"reproduced", "partly", "not reproduced", "not testable"}


@pytest.mark.parametrize(
    "e,verdict",
    [
        (est(0.7, 0.6, 0.8), R.REPRODUCED),  # the interval above 50%
        (est(0.55, 0.45, 0.6), R.PARTLY),  # the median above, the interval not
        (est(0.3, 0.2, 0.4), R.PARTLY),  # a plateau, but not most values
        (est(0.05, 0.04, 0.06), R.NOT_REPRODUCED),  # no plateau
        (est(0.7, n=1), R.PARTLY),  # one image: no interval, at best partly
        (est(NAN, n=0), R.NOT_TESTABLE),
    ],
)
def test_level_above(e, verdict):
    d = R.level_above(e, R.MOST, R.PLATEAU_MIN)
    assert d.verdict == verdict
    assert "50%" in d.rule and "10%" in d.rule and d.why


@pytest.mark.parametrize(
    "e,verdict",
    [
        (est(0.02, 0.01, 0.03), R.REPRODUCED),
        (est(0.08, 0.05, 0.12), R.PARTLY),
        (est(0.15, 0.12, 0.2), R.PARTLY),
        (est(0.3, 0.2, 0.4), R.NOT_REPRODUCED),
        (est(NAN, n=0), R.NOT_TESTABLE),
    ],
)
def test_level_below(e, verdict):
    assert R.level_below(e, R.PLATEAU_MIN, 0.2).verdict == verdict


@pytest.mark.parametrize(
    "e,t,direction,null,verdict",
    [
        (est(0.2, 0.1, 0.3), tr(0.001), "greater", 0.0, R.REPRODUCED),
        (est(0.2, -0.1, 0.3), tr(0.2), "greater", 0.0, R.PARTLY),
        (est(0.2, -0.1, 0.3), tr(0.01), "greater", 0.0, R.PARTLY),  # significant, but the CI reaches 0
        (est(-0.2, -0.3, -0.1), tr(0.99), "greater", 0.0, R.NOT_REPRODUCED),
        (est(0.0, -0.1, 0.1), tr(0.5), "greater", 0.0, R.NOT_REPRODUCED),
        (est(0.5, 0.3, 0.8), tr(0.01, alternative="less"), "less", 1.0, R.REPRODUCED),
        (est(1.5, 1.2, 1.8), tr(0.99, alternative="less"), "less", 1.0, R.NOT_REPRODUCED),
        (est(NAN, n=0), tr(NAN, n=0), "less", 0.0, R.NOT_TESTABLE),
    ],
)
def test_directional(e, t, direction, null, verdict):
    d = R.directional(e, t, direction, "x", null=null)
    assert d.verdict == verdict
    assert "Wilcoxon" in d.rule and f"p < {R.ALPHA:g}" in d.rule and "CI excludes" in d.rule


def test_directional_says_when_too_few_images_for_significance():
    d = R.directional(est(0.3, 0.1, 0.5, n=3), tr(0.125, n=3), "greater")
    assert d.verdict == R.PARTLY and "smallest possible p is 0.125" in d.why
    with pytest.raises(ValueError, match="direction"):
        R.directional(est(1.0), tr(0.1), "up")


@pytest.mark.parametrize(
    "slope,p,rel,verdict",
    [
        (-0.2, 0.01, -0.7, R.REPRODUCED),  # significant and drastic
        (-0.2, 0.01, -0.2, R.PARTLY),  # significant, not drastic
        (-0.2, 0.3, -0.7, R.PARTLY),  # not significant
        (0.1, 0.9, 0.3, R.NOT_REPRODUCED),  # the other direction
    ],
)
def test_trend_with_magnitude(slope, p, rel, verdict):
    d = R.trend(est(slope, slope - 0.1, slope + 0.1), tr(p, alternative="less"), "less", est(rel), R.DRASTIC)
    assert d.verdict == verdict and "50%" in d.rule


def test_trend_without_magnitude_is_directional():
    d = R.trend(est(0.1, 0.05, 0.2), tr(0.01), "greater")
    assert d.verdict == R.REPRODUCED


@pytest.mark.parametrize(
    "main,control,verdict",
    [
        (R.REPRODUCED, R.REPRODUCED, R.REPRODUCED),
        (R.REPRODUCED, R.NOT_REPRODUCED, R.PARTLY),
        (R.PARTLY, R.REPRODUCED, R.PARTLY),
        (R.NOT_REPRODUCED, R.REPRODUCED, R.NOT_REPRODUCED),
        (R.NOT_TESTABLE, R.REPRODUCED, R.NOT_TESTABLE),
    ],
)
def test_with_control(main, control, verdict):
    d = R.with_control(R.Decision(main, "m"), R.Decision(control, "c"), "ctrl")
    assert d.verdict == verdict and "ctrl" in d.rule


@pytest.mark.parametrize(
    "verdicts,verdict",
    [
        ((R.REPRODUCED, R.REPRODUCED), R.REPRODUCED),
        ((R.REPRODUCED, R.NOT_REPRODUCED), R.PARTLY),
        ((R.PARTLY, R.PARTLY), R.PARTLY),
        ((R.NOT_REPRODUCED, R.NOT_REPRODUCED), R.NOT_REPRODUCED),
        ((R.REPRODUCED, R.NOT_TESTABLE), R.NOT_TESTABLE),
    ],
)
def test_all_of(verdicts, verdict):
    assert R.all_of([R.Decision(v, f"r{i}", "w") for i, v in enumerate(verdicts)]).verdict == verdict
    with pytest.raises(ValueError):
        R.all_of([])


@pytest.mark.parametrize(
    "ratio,at_alpha,trained,verdict",
    [
        (est(0.9, 0.8, 1.0), est(0.3), est(0.35), R.REPRODUCED),  # the plateau keeps its width at alpha
        (est(0.3, 0.2, 0.4), est(0.15), est(0.35), R.PARTLY),  # narrower, still a plateau
        (est(0.1, 0.05, 0.2), est(0.03), est(0.35), R.NOT_REPRODUCED),  # gone at some alpha
        (est(0.9, 0.8, 1.0), est(0.03), est(0.04), R.NOT_TESTABLE),  # no plateau to move
    ],
)
def test_plateau_moves(ratio, at_alpha, trained, verdict):
    assert R.plateau_moves(ratio, at_alpha, trained).verdict == verdict


@pytest.mark.parametrize(
    "rise,fall,share,verdict",
    [
        (R.REPRODUCED, R.REPRODUCED, 0.8, R.REPRODUCED),
        (R.REPRODUCED, R.REPRODUCED, 0.4, R.PARTLY),  # the maximum is elsewhere on the grid
        (R.REPRODUCED, R.NOT_REPRODUCED, 0.4, R.PARTLY),  # no loss of width after the rise
        (R.NOT_REPRODUCED, R.NOT_REPRODUCED, 0.0, R.NOT_REPRODUCED),
    ],
)
def test_interior_maximum(rise, fall, share, verdict):
    d = R.interior_maximum(R.Decision(rise, "a"), R.Decision(fall, "b"), share, 0.5)
    assert d.verdict == verdict and "t = 0.5" in d.rule


def test_not_testable_carries_its_reason():
    d = R.not_testable("the last stage has 3 units")
    assert d.verdict == R.NOT_TESTABLE and "3 units" in d.why
