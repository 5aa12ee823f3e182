"""``RowSubset``: the rows of an operator selected by a boolean mask, ``J_S = P_S J``.

A ReLU-masked unit (or a composition ending in one) has exact zero rows; its nonzero singular
values and their right vectors are those of ``J_S`` on the ``m`` active rows, whose left
vectors are the full left vectors restricted to ``S``. Iterative solvers that work on the
smaller side then handle vectors of length ``min(m, n_in)`` instead of ``min(n_out, n_in)``.
"""

from __future__ import annotations

import torch

from .base import ComposedOperator, LinearOperator
from .closed_form import UnitJacobian
from .factors import is_mask


def output_mask(op: LinearOperator) -> tuple[torch.Tensor | None, str]:
    """The rows of ``op`` that may be nonzero, as far as its structure tells, and why.

    A unit Jacobian with a 0/1 (ReLU) output mask has exact zero rows where the mask is 0; a
    composition (a stage, the network) inherits the zero rows of the unit applied last.

    Args:
        op: any operator.

    Returns:
        ``(mask, source)``: a boolean ``(n_out,)`` mask on the operator's device (``None`` when
        no zero rows are known) and a short description of where it comes from.

    Raises:
        TypeError: ``op`` is not a :class:`LinearOperator`.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"expected a linstab LinearOperator (e.g. lin.unit(1, 5)), got {type(op).__name__}")
    last = op.ops[0] if isinstance(op, ComposedOperator) else op  # ops[0] is applied last
    if isinstance(last, UnitJacobian) and is_mask(last.out_deriv):
        what = "ReLU output mask of the last unit" if last is not op else "ReLU output mask of the unit"
        return last.out_deriv.reshape(-1) != 0, what
    return None, "no known zero rows"


class RowSubset(LinearOperator):
    """``J_S``: the rows of ``op`` where ``rows`` is true (a flat ``(m,)`` output).

    Args:
        op: the operator ``J`` (``n_out x n_in``).
        rows: boolean ``(n_out,)`` mask of the rows to keep (on any device).

    Raises:
        TypeError: ``op`` is not an operator or ``rows`` not a boolean tensor.
        ValueError: ``rows`` has the wrong shape or selects nothing.
    """

    def __init__(self, op: LinearOperator, rows: torch.Tensor) -> None:
        if not isinstance(op, LinearOperator):
            raise TypeError(f"RowSubset needs a LinearOperator, got {type(op).__name__}")
        n_out = op.shape[0]
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.bool:
            raise TypeError(f"rows must be a boolean tensor, got {type(rows).__name__}")
        if tuple(rows.shape) != (n_out,):
            raise ValueError(f"rows must have shape ({n_out},), got {tuple(rows.shape)}")
        idx = torch.nonzero(rows.reshape(-1), as_tuple=False).reshape(-1).to(op.device)
        if idx.numel() == 0:
            raise ValueError("rows selects no row")
        super().__init__(op.in_shape, (int(idx.numel()),), op.dtype, op.device, op.label)
        self.op, self.index, self.n_full = op, idx, n_out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        Y = self.op.matmat_batch(V).reshape(V.shape[0], self.n_full)
        return Y.index_select(1, self.index)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        full = W.new_zeros((W.shape[0], self.n_full))
        full.index_copy_(1, self.index, W)
        return self.op.rmatmat_batch(full.reshape(W.shape[0], *self.op.out_shape))

    def expand(self, U: torch.Tensor) -> torch.Tensor:
        """Columns ``(m, k)`` on the kept rows as full columns ``(n_out, k)`` (zeros elsewhere)."""
        out = U.new_zeros((self.n_full, U.shape[1]))
        out.index_copy_(0, self.index.to(U.device), U)
        return out
