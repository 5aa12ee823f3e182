"""The Jacobian (Taylor) test of Appendix A.

For a unit map ``F`` (one residual unit), a point ``x`` and a direction ``dx``, and
``eps = eps0, eps0/10, ...``::

    e0(eps) = ||F(x + eps dx) - F(x)||               (first order in eps)
    e1(eps) = ||F(x + eps dx) - F(x) - eps J dx||    (second order if J is right and F smooth)

The observed order is the slope of ``log10 e1`` against ``log10 eps`` over the points above
round-off. With ReLU the unit is piecewise linear: once ``eps`` is small enough that no
activation crosses zero, ``e1`` drops to round-off at once and no order can be read; linstab
reports that honestly (``exact_below_eps``). With ``smooth="softplus"``/``"gelu"`` every ReLU of
the unit is swapped for a smooth activation (on a copy) and the order is 2.

The nonlinearities of the tested unit are read from one forward pass of it at ``x`` (modules
and functional calls alike, :mod:`linstab.analyses.piecewise`): a unit tested as it is is
labelled ``"relu"`` only when ReLU is all it applies to its input besides linear ops, else
``"as-is (silu, relu)"``, ``"as-is (relu, group_norm)"``, ``"as-is (relu, sigmoid, mul(x, x))"``
and the like. The piecewise-linear conclusion (``exact_below_eps``) is drawn only when every op
on the input is linear or piecewise linear (ReLU, ReLU6, leaky ReLU, max pooling, ...): for a
smooth unit a remainder at round-off only means the floor was reached, and the measured order is
reported instead.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..io.validate import check_int, is_real
from ..linalg.results import check_seed
from ..models.state import cast_state
from ..operators.autodiff import AutodiffJacobian
from ..operators.closed_form import UnitJacobian
from .piecewise import OpRecorder

SMOOTH = ("softplus", "gelu")
MAX_STEPS = 30
"""Most step sizes of one test (``eps0`` down to ``eps0 * 1e-29``)."""
MAX_EPS0 = 10.0
"""Largest first step: a perturbation ten times the norm of the unit's input."""


@dataclass
class TaylorResult:
    """Outcome of :func:`jacobian_test`.

    Attributes:
        unit: unit address ``"S.K"``.
        activation: ``"relu"`` (a unit tested as it is whose activations are all ReLU),
            ``"as-is (NAMES)"`` (as it is, with other activations, e.g. ``"as-is (silu, relu)"``;
            ``"as-is (relu, group_norm)"``, ``"as-is (relu, sigmoid, mul(x, x))"`` for other
            smooth ops and products of two input-dependent tensors, ``"NAME?"`` for an op
            linstab does not know; ``"as-is (none found)"`` when every op is linear),
            ``"softplus(beta=...)"`` or ``"gelu"`` (``smooth=``; followed by
            ``" + as-is (NAMES)"`` when activations other than ReLU were left in place).
        method: Jacobian implementation tested (``"closed"`` or ``"autodiff"``).
        dtype: computation dtype name.
        eps: the step sizes.
        err0: ``||F(x+eps dx) - F(x)||`` per eps.
        err1: ``||F(x+eps dx) - F(x) - eps J dx||`` per eps.
        slopes: pairwise slopes of ``log10 err1`` between consecutive eps.
        order: median slope over points above round-off (``nan`` if fewer than two).
        order0: the same for ``err0`` (should be 1).
        floor: the round-off level used (``1e3 * machine eps * ||F(x)||``).
        exact_below_eps: the largest eps from which on ``err1`` stays at round-off (piecewise
            linear regime), or ``None``; only for a piecewise-linear unit (``None`` for smooth
            ones, whose remainder at round-off is the floor, not exactness).
        passed: ``order >= 1.9``, or (piecewise-linear units tested as they are) ``err1`` at
            round-off for small eps.
        piecewise_linear: whether every op the tested unit applies to its input is linear or
            piecewise linear (ReLU, ReLU6, leaky ReLU, max pooling, ...; none unknown).
        floor_below_eps: the largest eps from which on ``err1`` stays at round-off, for any
            unit (``None`` if it never does).
    """

    unit: str
    activation: str
    method: str
    dtype: str
    eps: list[float]
    err0: list[float]
    err1: list[float]
    slopes: list[float] = field(default_factory=list)
    order: float = math.nan
    order0: float = math.nan
    floor: float = 0.0
    exact_below_eps: float | None = None
    passed: bool = False
    piecewise_linear: bool = False
    floor_below_eps: float | None = None

    def to_dict(self) -> dict:
        """The result as a JSON-able dict."""
        return asdict(self)

    def table(self) -> str:
        """Human-readable table."""
        rows = [
            f"Jacobian test, unit {self.unit}, activation {self.activation}, "
            f"{self.method} Jacobian, {self.dtype}",
            f"{'eps':>10} {'||F(x+e dx)-F(x)||':>20} {'||...-e J dx||':>16} {'slope':>7}",
        ]
        for i, (e, a, b) in enumerate(zip(self.eps, self.err0, self.err1, strict=True)):
            s = f"{self.slopes[i - 1]:7.2f}" if i > 0 else " " * 7
            rows.append(f"{e:10.1e} {a:20.4e} {b:16.4e} {s}")
        rows.append(f"observed order: {self.order:.3f} (first-order term: {self.order0:.3f})")
        if self.exact_below_eps is not None:
            rows.append(
                f"linear to round-off for eps <= {self.exact_below_eps:.1e}: no activation "
                "crosses zero there (ReLU is piecewise linear)"
            )
        elif self.floor_below_eps is not None and not self.piecewise_linear:
            rows.append(
                f"round-off floor reached for eps <= {self.floor_below_eps:.1e} (smooth activation: "
                "not exactness; the order is read above the floor)"
            )
        if math.isnan(self.order) and not self.piecewise_linear:
            rows.append("no order measured: fewer than two steps above round-off (try a larger eps0)")
        rows.append("PASSED" if self.passed else "NOT PASSED")
        return "\n".join(rows)


def _check_smooth(kind: str, beta: float) -> None:
    if kind not in SMOOTH:
        raise ValueError(f"smooth activation must be one of {SMOOTH}, got {kind!r}")
    if kind == "softplus" and not (
        isinstance(beta, (int, float)) and not isinstance(beta, bool) and math.isfinite(beta) and beta > 0
    ):
        raise ValueError(f"beta: expected a finite softplus sharpness > 0, got {beta!r}")


def smooth_copy(unit: nn.Module, kind: str = "softplus", beta: float = 20.0) -> nn.Module:
    """A copy of a linstab ``ResidualUnit`` with every ReLU replaced by a smooth activation.

    Args:
        unit: the unit (not modified).
        kind: ``"softplus"`` (``Softplus(beta)``) or ``"gelu"``.
        beta: softplus sharpness.
    """
    _check_smooth(kind, beta)
    new = copy.deepcopy(unit)

    def make() -> nn.Module:
        return nn.Softplus(beta=beta) if kind == "softplus" else nn.GELU()

    for mod in list(new.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, name, make())
    return new


def _label(names: list[str], smooth: str | None, beta: float) -> str:
    """The ``activation`` label of a tested unit.

    Args:
        names: the nonlinear ops its forward pass applied to its input
            (:attr:`~linstab.analyses.piecewise.OpRecorder.names`).
        smooth: ``None``, ``"softplus"`` or ``"gelu"``.
        beta: softplus sharpness.
    """
    if smooth is None:
        if names == ["relu"]:
            return "relu"
        return f"as-is ({', '.join(names) if names else 'none found'})"
    label = f"softplus(beta={beta:g})" if smooth == "softplus" else "gelu"
    others = [n for n in names if n != smooth]
    return f"{label} + as-is ({', '.join(others)})" if others else label


def jacobian_test(
    net,
    image: torch.Tensor,
    stage: int,
    index: int,
    *,
    smooth: str | None = None,
    beta: float = 20.0,
    eps0: float = 1e-1,
    steps: int = 8,
    method: str = "auto",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> TaylorResult:
    """Run the Jacobian test on unit ``stage.index`` of a :class:`~linstab.network.Network`.

    Args:
        net: the network.
        image: the image ``(3, H, W)`` in [0, 1] at which the unit is linearized.
        stage: 1-based stage.
        index: 1-based unit within the stage.
        smooth: ``None`` (the unit as it is), ``"softplus"`` or ``"gelu"`` (every ReLU module
            of the unit's recognized form swapped; recognized units only).
        beta: softplus sharpness for ``smooth="softplus"``.
        eps0: largest step; ``dx`` has the norm of the unit's input ``x``.
        steps: number of step sizes (each a tenth of the previous).
        method: ``"closed"``, ``"autodiff"`` or ``"auto"``.
        dtype: float64 (default) or float32.
        seed: seed of the direction ``dx``.

    Raises:
        TypeError: for a stage, index, steps or seed that is not an int.
        ValueError: for an address outside the network, ``steps`` outside ``2..MAX_STEPS``,
            ``eps0`` outside ``(0, MAX_EPS0]`` (NaN, infinite), an unknown
            ``smooth`` or ``method``, or ``smooth=``/``method="closed"`` on a unit whose form is
            not recognized; all before the linearization.
    """
    steps = check_int("steps", steps, 2)
    if steps > MAX_STEPS:  # eps0 / 10**k: far below round-off long before, and 10**330 overflows
        raise ValueError(
            f"steps: expected at most {MAX_STEPS} (eps down to eps0 * 1e-{MAX_STEPS - 1}), got {steps}"
        )
    if not is_real(eps0) or not 0 < eps0 <= MAX_EPS0:
        raise ValueError(
            f"eps0: expected a number in (0, {MAX_EPS0:g}] (the largest step, relative to the norm of the "
            f"unit's input), got {eps0!r}"
        )
    seed = check_seed(seed, what=" (torch.Generator)")
    if smooth is not None:
        _check_smooth(smooth, beta)
    if method not in ("closed", "autodiff", "auto"):  # before the linearization
        raise ValueError(f"method must be 'closed', 'autodiff' or 'auto', got {method!r}")
    info = net.unit(stage, index)  # the address, before any work

    def check_form(u) -> None:
        if u.canonical is not None:
            return
        if smooth is not None:
            raise ValueError(
                f"smooth={smooth!r} needs a unit of a recognized form (its ReLU modules are swapped), "
                f"got unit {u.address} ({type(u.module).__name__}), not recognized: test it as it is "
                "(smooth=None)"
            )
        if method == "closed":
            raise ValueError(
                f"method='closed' needs a unit of a recognized form, got unit {u.address} "
                f"({type(u.module).__name__}), not recognized: use method='autodiff' or 'auto'"
            )

    check_form(info)
    lin = net.linearize(image, dtype=dtype, method="autodiff")
    info = net.unit(stage, index)  # the units are discovered again if the weights changed
    check_form(info)
    i = net.units.index(info)
    x = lin.inputs[i][0]
    if method == "auto":
        method = "closed" if info.canonical is not None else "autodiff"
    if smooth is not None:
        module = smooth_copy(info.canonical, smooth, beta)
    else:
        module = info.module if method == "autodiff" else info.canonical
    if method == "closed":
        J = UnitJacobian(module, x, dtype)
    else:
        J = AutodiffJacobian(module, x, dtype)

    state = cast_state(module, dtype)

    def F(z: torch.Tensor) -> torch.Tensor:
        # a copy: a module may change its input in place (``x = relu_(x)``, ``x += out``), which
        # would move the point ``x`` itself
        with torch.no_grad():
            return torch.func.functional_call(module, state, (z.unsqueeze(0).clone(),))[0]

    g = torch.Generator(device="cpu").manual_seed(int(seed))
    dx = torch.randn(x.shape, generator=g, dtype=dtype).to(x.device)
    dx = dx * (x.norm() / dx.norm())
    with OpRecorder(x) as rec:  # the nonlinearities the tested module really applies to x
        fx = F(x)
    piecewise = rec.piecewise_linear
    act = _label(rec.names, smooth, beta)
    jdx = J @ dx
    eps = [eps0 / 10**k for k in range(steps)]
    err0, err1 = [], []
    for e in eps:
        d = F(x + e * dx) - fx
        err0.append(float(d.norm()))
        err1.append(float((d - e * jdx).norm()))
    floor = 1e3 * torch.finfo(dtype).eps * float(fx.norm())
    slopes = [math.log10(max(err1[k - 1], 1e-300) / max(err1[k], 1e-300)) for k in range(1, len(eps))]
    above = [k for k in range(1, len(eps)) if err1[k] > floor and err1[k - 1] > floor]
    order = float(torch.tensor([slopes[k - 1] for k in above]).median()) if above else math.nan
    s0 = [math.log10(err0[k - 1] / err0[k]) for k in range(1, len(eps)) if err0[k] > 0]
    order0 = float(torch.tensor(s0).median()) if s0 else math.nan
    floor_below = next((eps[k] for k in range(len(eps)) if all(v <= floor for v in err1[k:])), None)
    # locally linear (exact to round-off) only where every activation is piecewise linear: for
    # a smooth unit the remainder at round-off is the floor, not exactness
    exact_below = floor_below if smooth is None and piecewise else None
    passed = exact_below is not None or order >= 1.9
    return TaylorResult(
        unit=info.address,
        activation=act,
        method=method,
        dtype=str(dtype).replace("torch.", ""),
        eps=eps,
        err0=err0,
        err1=err1,
        slopes=slopes,
        order=order,
        order0=order0,
        floor=floor,
        exact_below_eps=exact_below,
        passed=passed,
        piecewise_linear=piecewise,
        floor_below_eps=floor_below,
    )
