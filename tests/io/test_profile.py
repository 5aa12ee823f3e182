"""Timing records: nothing recorded outside ``profiling``, labels from scopes, nesting, summaries."""

from __future__ import annotations

import json

import pytest
import torch
from factories import make_net, tiny_image

from linstab.io.profile import profile_summary, profiling, record, scope, timed
from linstab.spectra.bands import bands
from linstab.spectra.spectrum import spectrum


def test_nothing_recorded_outside_a_profiling_block():
    with timed("spectrum") as info:
        info["route"] = "x"
    record("plot", 1.0)
    with profiling() as prof:
        pass
    assert prof.records == []


def test_scopes_label_records_and_nested_records_are_not_counted_twice():
    with profiling() as prof:
        with scope(section="spectra", image="a"):
            with timed("spectrum", method="exact") as info:
                with timed("bands"):
                    pass
                info["route"] = "gram"
                info["parts"] = {"eig": 2.0}
            with scope(image="b"):
                record("plot", 0.5, name="fig")
    cats = {r.category: r for r in prof.records}
    assert cats["spectrum"].labels == {"section": "spectra", "image": "a", "method": "exact", "route": "gram"}
    assert cats["bands"].nested and not cats["spectrum"].nested
    assert cats["plot"].labels["image"] == "b"
    assert prof.total() == pytest.approx(cats["spectrum"].seconds + 0.5)
    by = {r["category"]: r for r in prof.summary(("category",))}
    assert set(by) == {"spectrum", "plot"}
    assert {r["category"] for r in prof.summary(("category",), outer_only=False)} == {
        "spectrum",
        "bands",
        "plot",
    }
    assert prof.parts("spectrum", ("route",)) == [{"route": "gram", "count": 1, "eig": 2.0}]
    with pytest.raises(TypeError, match="tuple of label names"):
        prof.summary("category")


@pytest.mark.parametrize("kind", ["option-A", "option-B"])
def test_spectrum_and_bands_report_their_route(kind):
    net = make_net(kind, seed=1)
    lin = net.linearize(tiny_image(1), dtype=torch.float64)
    op = lin.unit(1, 1)
    with profiling() as prof, scope(panel="p"):
        res = spectrum(op, "exact")
        bc = bands(op)
    recs = {r.category: r for r in prof.records}
    assert recs["spectrum"].labels["route"] == res.route
    assert recs["spectrum"].labels["panel"] == "p"
    assert recs["spectrum"].parts["total"] == pytest.approx(res.timings["total"])
    assert recs["bands"].labels["route"] == bc.route
    s = profile_summary(prof)
    json.dumps(s)
    assert s["spectra_by_panel"][0]["panel"] == "p"
