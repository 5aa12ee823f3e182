"""Report section: the Taylor test of the linearization (Appendix A of the paper).

At every image of the report (quick: the first 2), the fifth unit of each stage and the first
unit of stages 2..L are tested with every ReLU of the unit replaced by softplus (order 2
expected) and with ReLU (exact to round-off below some eps when no activation crosses zero).
"""

from __future__ import annotations

import functools

import numpy as np

from ..analyses.taylor import jacobian_test
from ..io.cache import tensor_hash
from ..io.profile import timed
from . import rules as R
from .context import ReportContext, Section, fmt
from .findings import estimate, make_finding

N_JACOBIAN = (None, 2)
"""Images of the Taylor test (full: all, quick)."""


def section_jacobian_tests(ctx: ReportContext, net, images) -> Section:
    """The Taylor test of unit Jacobians (smooth and ReLU) at several images, with its finding."""
    sec = Section("Jacobian (Taylor) tests")
    picks = [net.stages[s][min(4, len(net.stages[s]) - 1)] for s in range(len(net.stages))]
    picks += [st[0] for st in net.stages[1:]]
    k = (
        images.shape[0]
        if N_JACOBIAN[ctx.cfg.quick] is None
        else min(N_JACOBIAN[ctx.cfg.quick], images.shape[0])
    )
    ids = ctx.image_ids[:k]
    # softplus needs a unit of a recognized form (its ReLU modules are swapped); other units are
    # tested as they are (a smooth one then gives its order, a piecewise-linear one its exactness)
    todo = [
        (i, u, smooth)
        for i in range(k)
        for u in picks
        for smooth in (("softplus", None) if u.canonical is not None else (None,))
    ]

    def compute(i, u, smooth):
        with timed("taylor", unit=u.address, image=ids[i], activation=smooth or "relu"):
            r = jacobian_test(net, images[i], u.stage, u.index, smooth=smooth)
        return {"eps": np.array(r.eps), "err0": np.array(r.err0), "err1": np.array(r.err1)}, {
            "order": r.order,
            "order0": r.order0,
            "passed": r.passed,
            "exact_below_eps": r.exact_below_eps,
            "activation": r.activation,
            "piecewise_linear": r.piecewise_linear,
        }

    model = ctx.model_key(net)
    hashes = [tensor_hash(images[i]) for i in range(k)]
    items = [
        (
            "taylor",
            # "ops": v3 labels by every op on the input (analyses.piecewise; in-place copy_/fill_/zero_ known)
            {
                "model": model,
                "image": hashes[i],
                "unit": u.address,
                "smooth": smooth,
                "what": "taylor",
                "ops": 3,
            },
            functools.partial(compute, i, u, smooth),
        )
        for i, u, smooth in todo
    ]
    bar = ctx.bar(len(items), "jacobian tests")
    got = ctx.cache.get_or_compute_many(items, ctx.cfg.n_workers, on_done=bar.update)
    bar.close()
    rows = []
    for (i, u, smooth), (_, meta) in zip(todo, got, strict=True):
        rows.append(
            {
                "image": ids[i],
                "unit": u.address,
                "kind": u.kind,
                "tested": smooth or "as-is",
                "activation": meta["activation"],
                "piecewise_linear": meta["piecewise_linear"],
                "order": round(float(meta["order"]), 3) if meta["order"] == meta["order"] else "",
                "first_order_slope": round(float(meta["order0"]), 3),
                "exact_below_eps": meta["exact_below_eps"] or "",
                "passed": meta["passed"],
            }
        )
    imgs = ctx.images_text(k)
    sec.data.append(ctx.write_csv("jacobian_tests.csv", rows))
    sec.tables.append((f"Taylor test per unit ({imgs})", rows))
    # second-order evidence: softplus rows, and units that are smooth as they are
    smooth_rows = [
        r for r in rows if (r["tested"] != "as-is" or not r["piecewise_linear"]) and r["order"] != ""
    ]
    as_is = [r for r in rows if r["tested"] == "as-is" and r["piecewise_linear"]]
    per_image = [
        min(r["order"] for r in smooth_rows if r["image"] == i)
        if any(r["image"] == i for r in smooth_rows)
        else float("nan")
        for i in ids
    ]
    relu_exact = [r for r in as_is if r["exact_below_eps"] != ""]
    orders = [r["order"] for r in smooth_rows]
    sec.text.append(
        f"With every ReLU of the tested unit replaced by softplus, the residual "
        f"||F(x+eps dx)-F(x)-eps J dx|| falls with order {fmt(min(orders, default=float('nan')))} to "
        f"{fmt(max(orders, default=float('nan')))} over {len(picks)} units and {k} images (2 expected). With "
        f"ReLU, {len(relu_exact)} of {len(as_is)} unit-image pairs are linear to round-off below some "
        "eps (no "
        "activation crosses zero), so the residual drops to round-off at once."
    )
    est = estimate(per_image, ctx.cfg.seed)
    ctx.findings.append(
        make_finding(
            "Jacobian test",
            "The linearization is correct: the Taylor residual is second order (Appendix A).",
            f"per image: smallest fitted order over units {', '.join(u.address for u in picks)} with "
            "softplus; "
            "median over images",
            R.level_above(est, R.TAYLOR_ORDER, pct=False),
            est,
            images=imgs,
            measured=f"order {est.text()}",
        )
    )
    return sec
