"""Report section: the Taylor test of the linearization."""

from __future__ import annotations

import numpy as np

from ..analyses.taylor import jacobian_test
from ..io.cache import tensor_hash
from .context import Finding, ReportContext, Section, fmt


def section_jacobian_tests(ctx: ReportContext, net, images) -> Section:
    """The Taylor test of unit Jacobians (smooth and ReLU), with its finding."""
    sec = Section("Jacobian (Taylor) tests")
    rows = []
    picks = [net.stages[s][min(4, len(net.stages[s]) - 1)] for s in range(len(net.stages))]
    picks += [st[0] for st in net.stages[1:]]
    x = images[0]
    for u in ctx.progress(picks, "jacobian tests"):
        for smooth in ("softplus", None):
            parts = {
                "model": net.sha256 or net.name,
                "image": tensor_hash(x),
                "unit": u.address,
                "smooth": smooth,
                "what": "taylor",
            }

            def compute(u=u, smooth=smooth):
                r = jacobian_test(net, x, u.stage, u.index, smooth=smooth)
                return {"eps": np.array(r.eps), "err0": np.array(r.err0), "err1": np.array(r.err1)}, {
                    "order": r.order,
                    "order0": r.order0,
                    "passed": r.passed,
                    "exact_below_eps": r.exact_below_eps,
                    "activation": r.activation,
                }

            arrays, meta = ctx.cache.get_or_compute("taylor", parts, compute)
            rows.append(
                {
                    "unit": u.address,
                    "kind": u.kind,
                    "activation": meta["activation"],
                    "order": round(float(meta["order"]), 3) if meta["order"] == meta["order"] else "",
                    "first_order_slope": round(float(meta["order0"]), 3),
                    "exact_below_eps": meta["exact_below_eps"] or "",
                    "passed": meta["passed"],
                }
            )
    sec.data.append(ctx.write_csv("jacobian_tests.csv", rows))
    sec.tables.append(("Taylor test per unit (image 0)", rows))
    smooth_orders = [r["order"] for r in rows if r["activation"] != "relu" and r["order"] != ""]
    relu_exact = [r for r in rows if r["activation"] == "relu" and r["exact_below_eps"] != ""]
    ok = smooth_orders and min(smooth_orders) >= 1.9
    sec.text.append(
        f"With every ReLU of the tested unit replaced by softplus, the residual "
        f"||F(x+eps dx)-F(x)-eps J dx|| falls with order {fmt(min(smooth_orders))} to "
        f"{fmt(max(smooth_orders))} over {len(smooth_orders)} units (2 expected). With ReLU, "
        f"{len(relu_exact)} of {len(rows) // 2} units are linear to round-off below some eps (no "
        "activation crosses zero), so the residual drops to round-off at once."
    )
    ctx.findings.append(
        Finding(
            "Jacobian test",
            "The linearization is correct (Taylor residual is second order).",
            f"order {fmt(min(smooth_orders))}-{fmt(max(smooth_orders))} with softplus",
            "reproduced" if ok else "not reproduced",
        )
    )
    return sec
