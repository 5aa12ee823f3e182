"""What is known exactly about an operator's singular values before any estimation.

* Structural zeros: an output coordinate whose ReLU mask is 0 gives a zero row of ``J``. With
  ``m`` active rows, ``J`` has at most ``min(m, n_in)`` nonzero singular values, so at least
  ``n - min(m, n_in)`` of its ``n = min(n_out, n_in)`` singular values are exactly 0. The
  estimators work on the Gram of the active rows ``J_S J_S^T`` (``m <= n_in``; else ``J^T J``),
  whose ``p = min(m, n_in)`` eigenvalues are exactly the squares of the other singular values:
  probes live on the active coordinates only, so the zeros are projected out exactly.
* Exact ``|alpha|`` values: a unit ``J = D_out (alpha I + U W)`` with an identity shortcut and
  a ReLU mask with ``r`` active units in an inner layer has at least ``m - 2r`` singular values
  equal to ``|alpha|`` exactly (``J_S J_S^T = alpha^2 I_m + Q M Q^T``, ``Q`` is ``m x 2r``; see
  :mod:`linstab.spectra`). This count is a lower bound (``Q`` may lose rank).

A composition (a stage or a network) whose last-applied factor is such a unit inherits that
unit's zero rows. Everything here costs a few reductions over masks (no operator products).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..io.validate import check_int
from ..operators import LinearOperator, UnitJacobian, is_mask, output_mask

__all__ = ["ExactParts", "exact_parts"]


@dataclass
class ExactParts:
    """The exactly known part of an operator's singular values and the probe space.

    Attributes:
        n: number of singular values, ``min(n_out, n_in)``.
        side: Gram the estimators use: ``"left"`` (``J J^T`` on outputs) or ``"right"``
            (``J^T J`` on inputs).
        support: boolean ``(dim,)`` mask of the probe coordinates on the chosen side (on the
            operator's device), or ``None`` for all coordinates.
        n_probe_space: ``p``, the dimension of the probe space (= number of Gram eigenvalues
            estimated); ``p <= n``.
        n_structural_zero: ``n - p`` singular values that are exactly 0 by structure.
        plateau_value: ``|alpha|`` when the unit's structure guarantees singular values equal
            to it, else ``None``.
        n_exact_plateau: a lower bound on ``#(s == |alpha|)`` from the structure (0 if none).
        source: a short description of where the facts come from.
    """

    n: int
    side: str
    support: torch.Tensor | None
    n_probe_space: int
    n_structural_zero: int
    plateau_value: float | None = None
    n_exact_plateau: int = 0
    source: str = "none"

    def to_dict(self) -> dict:
        """The facts, JSON-serializable (without the mask)."""
        return {
            "n": self.n,
            "side": self.side,
            "n_probe_space": self.n_probe_space,
            "n_structural_zero": self.n_structural_zero,
            "plateau_value": self.plateau_value,
            "n_exact_plateau": self.n_exact_plateau,
            "source": self.source,
        }


def _plateau(op: LinearOperator, m: int) -> tuple[float | None, int]:
    if not isinstance(op, UnitJacobian) or op.shortcut_kind != "identity" or op.in_shape != op.out_shape:
        return None, 0
    if op.out_deriv is not None and not is_mask(op.out_deriv):
        return None, 0
    rs = [int(blk.deriv.sum()) for blk in op.blocks if is_mask(blk.deriv)]
    if not rs:
        return None, 0
    return abs(float(op.alpha)), max(0, m - 2 * min(rs))


def exact_parts(
    op: LinearOperator,
    *,
    active_rows: torch.Tensor | None = None,
    plateau_value: float | None = None,
    n_exact_plateau: int | None = None,
    detect: bool = True,
) -> ExactParts:
    """Exact facts about ``op``'s singular values and the probe space the estimators use.

    Args:
        op: the operator ``J`` (``n_out x n_in``).
        active_rows: boolean ``(n_out,)`` mask of rows known to be possibly nonzero (rows
            outside it must be exactly zero rows of ``J``); overrides detection.
        plateau_value: a value known to occur exactly (e.g. ``|alpha|``); overrides detection.
        n_exact_plateau: a lower bound on how often ``plateau_value`` occurs; overrides
            detection.
        detect: detect masks and the identity-shortcut structure of closed-form unit
            Jacobians (:class:`~linstab.operators.UnitJacobian`) and of compositions ending in
            one. With ``False`` only the arguments are used.

    Returns:
        an :class:`ExactParts`.

    Raises:
        TypeError: ``op`` is not a :class:`~linstab.operators.LinearOperator` or
            ``active_rows`` is not a boolean tensor.
        ValueError: ``active_rows`` has the wrong shape or a count is negative.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"expected a linstab LinearOperator (e.g. lin.unit(1, 5)), got {type(op).__name__}")
    n_out, n_in = op.shape
    n = min(n_out, n_in)
    source = "none"
    mask = None
    if active_rows is not None:
        if not isinstance(active_rows, torch.Tensor) or active_rows.dtype != torch.bool:
            raise TypeError(f"active_rows must be a boolean tensor, got {type(active_rows).__name__}")
        if active_rows.shape != (n_out,):
            raise ValueError(f"active_rows must have shape ({n_out},), got {tuple(active_rows.shape)}")
        mask, source = active_rows.to(op.device), "given active rows"
    elif detect:
        mask, source = output_mask(op)
    m = n_out if mask is None else int(mask.sum())
    if mask is not None and m <= n_in:
        side, support, p = "left", mask, m
    elif n_out <= n_in:
        side, support, p = "left", None, n_out
    else:
        side, support, p = "right", None, n_in  # J^T J = J_S^T J_S: the mask does not shrink it
    value, count = _plateau(op, m) if detect else (None, 0)
    if plateau_value is not None:
        value = abs(float(plateau_value))
        count = 0 if n_exact_plateau is None else count
    if n_exact_plateau is not None:
        check_int("n_exact_plateau", n_exact_plateau, 0)
        if value is None:
            raise ValueError("n_exact_plateau needs plateau_value (the value that occurs exactly)")
        count = n_exact_plateau
    if value is not None and count and source == "none":
        source = "identity-shortcut structure"
    elif value is not None and count:
        source += " + identity-shortcut structure"
    return ExactParts(
        n=n,
        side=side,
        support=support,
        n_probe_space=p,
        n_structural_zero=n - p,
        plateau_value=value,
        n_exact_plateau=min(count, p),
        source=source,
    )
