"""A network linearized at one input: cached unit, stage and network operators."""

from __future__ import annotations

import numpy as np
import torch

from ..operators.autodiff import AutodiffJacobian
from ..operators.base import ComposedOperator, LinearOperator
from ..operators.closed_form import UnitJacobian

JACOBIAN_METHODS = ("auto", "closed", "autodiff")


class Linearization:
    """Linear operators of units, stages and the whole network at one image.

    Created by :meth:`Network.linearize`. Operators are built on first request and cached.

    Attributes:
        net: the :class:`Network`.
        image: the input image ``(1, 3, H, W)``.
        dtype: computation dtype.
        method: ``"auto"``, ``"closed"`` or ``"autodiff"``.
        inputs: each unit's input activation ``(1, C, H, W)``, in unit order.
        outputs: each unit's output activation.
        logits: the network output at the image.
    """

    def __init__(self, network, image, dtype, method, inputs, outputs, logits) -> None:
        self.net = network
        self.image = image
        self.dtype = dtype
        self.method = method
        self.inputs = inputs
        self.outputs = outputs
        self.logits = logits
        self._cache: dict[tuple[int, str], LinearOperator] = {}
        self._closed_missed: set[int] = set()  # units whose closed form missed the recorded output
        self._probe = network._state_probe()  # the model's state at the linearization point

    def _check_state(self) -> None:
        """Refuse to build an operator after the model's weights changed: it would combine the
        new weights with the activations of the old ones (operators already built are
        snapshots and stay valid).
        """
        if self.net._state_probe() != self._probe:
            raise ValueError(
                f"the parameters or buffers of {self.net.name} changed (replaced, edited in place, "
                "moved or cast) since net.linearize(): the activations recorded then belong to the "
                "old weights; linearize again"
            )

    def _output_error(self, op: LinearOperator, i: int) -> str | None:
        """``None`` when the operator's map, run at unit ``i``'s recorded input, gives the output
        recorded at ``net.linearize()`` (to round-off in the operator's dtype); otherwise the size
        of the difference, for a message.
        """
        ref = self.outputs[i][0].to(self.dtype)
        out = op.output
        if out.shape != ref.shape:
            return f"output shape {tuple(out.shape)} instead of {tuple(ref.shape)}"
        scale = float(ref.abs().max()) or 1.0
        err = float((out - ref).abs().max())
        tol = (1e-10 if self.dtype == torch.float64 else 1e-4) * scale
        return None if err <= tol else f"max abs error {err:.3g}"

    def _not_reproduced(self, i: int, what: str, err: str, hint: str = "") -> ValueError:
        info = self.net.units[i]
        return ValueError(
            f"unit {info.address} ({type(info.module).__name__}): {what}, run at the unit's input, does "
            f"not reproduce the output recorded by net.linearize() ({err}): the model's weights changed "
            "since (also through param.data, which leaves no trace), or its forward pass is random; "
            f"linearize again after a change{hint}"
        )

    def _index(self, stage: int, index: int) -> int:
        info = self.net.unit(stage, index)
        return self.net.units.index(info)

    def unit(self, stage: int, index: int, method: str | None = None) -> LinearOperator:
        """The Jacobian of unit ``stage.index`` (1-based) at this image.

        Every operator is checked, when built, to reproduce the unit's output recorded at
        ``net.linearize()``. With ``"auto"``, a unit whose closed form does not reproduce it (its
        twin matched the module where the network was built, but not at this image) gets the
        autodiff Jacobian.

        Raises:
            ValueError: an unknown method, ``"closed"`` for a unit without a closed form, or an
                operator that does not reproduce the recorded output (weights changed since the
                linearization, a random forward pass).
        """
        method = method or self.method
        if method not in JACOBIAN_METHODS:
            raise ValueError(f"method must be one of {JACOBIAN_METHODS}, got {method!r}")
        i = self._index(stage, index)
        info = self.net.units[i]
        auto = method == "auto"
        if auto:
            method = "closed" if info.canonical is not None and i not in self._closed_missed else "autodiff"
        key = (i, method)
        if key not in self._cache:
            self._check_state()
            if method == "closed":
                if info.canonical is None:
                    raise ValueError(
                        f"unit {info.address} ({type(info.module).__name__}) has no closed form; "
                        "use method='autodiff'"
                    )
                op = UnitJacobian(info.canonical, self.inputs[i], self.dtype, label=info.address)
                err = self._output_error(op, i)
                if err is not None and auto:
                    self._closed_missed.add(i)
                    return self.unit(stage, index, "autodiff")
                if err is not None:
                    raise self._not_reproduced(
                        i,
                        "its closed form",
                        err,
                        "; otherwise use method='autodiff' (the closed form's "
                        "twin does not reproduce this module at this image)",
                    )
            else:
                self.net.check_eval()  # autodiff runs the user's module: it must still be in eval mode
                op = AutodiffJacobian(info.module, self.inputs[i], self.dtype, label=info.address)
                err = self._output_error(op, i)
                if err is not None:
                    raise self._not_reproduced(i, "the module", err)
            self._cache[key] = op
        return self._cache[key]

    def units_of_stage(self, stage: int, method: str | None = None) -> list[LinearOperator]:
        """The unit operators of a stage, in forward order."""
        if isinstance(stage, bool) or not isinstance(stage, int | np.integer):
            raise TypeError(f"stage: expected an integer in 1..{len(self.net.stages)}, got {stage!r}")
        stage = int(stage)
        n = len(self.net.stages[stage - 1]) if 1 <= stage <= len(self.net.stages) else 0
        if n == 0:
            raise ValueError(f"stage must be in 1..{len(self.net.stages)}, got {stage}")
        return [self.unit(stage, k, method) for k in range(1, n + 1)]

    def _check_chain(self, first: int, last: int) -> None:
        for i in range(first, last):
            a, b = self.outputs[i], self.inputs[i + 1]
            if a.shape != b.shape or not torch.equal(a, b):
                ua, ub = self.net.units[i], self.net.units[i + 1]
                raise ValueError(
                    f"units {ua.address} and {ub.address} are not chained (the output of one is "
                    "not the input of the next): the composed operator would be wrong"
                )

    def stage(self, stage: int, method: str | None = None) -> ComposedOperator:
        """The stage Jacobian: the product of its unit Jacobians (last unit leftmost)."""
        ops = self.units_of_stage(stage, method)
        first = self._index(stage, 1)
        self._check_chain(first, first + len(ops) - 1)
        return ComposedOperator(list(reversed(ops)))

    def network(self, method: str | None = None) -> ComposedOperator:
        """The Jacobian from the stem's output to the head's input (all units chained)."""
        self._check_chain(0, len(self.net.units) - 1)
        ops = [self.unit(u.stage, u.index, method) for u in self.net.units]
        return ComposedOperator(list(reversed(ops)))
