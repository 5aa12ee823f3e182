"""The operator contract (``_matmat``/``_rmatmat`` on batches) and its algebra: adjoint,
composition, dense and identity operators, SciPy export, materialization.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..io.validate import check_int


def _prod(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


class LinearOperator:
    """Base class: subclasses implement ``_matmat`` and ``_rmatmat`` on ``(B, *shape)`` batches.

    Attributes:
        in_shape: shape of one input map.
        out_shape: shape of one output map.
        dtype: the floating dtype the operator computes in.
        device: the torch device of its cached tensors.
        label: what the operator is (e.g. the unit address ``"1.5"``), used in messages and
            results; ``None`` when not given.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    label: str | None

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        label: str | None = None,
    ) -> None:
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"an operator works in torch.float32 or torch.float64, got {dtype}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.label = label

    # -- to be implemented -------------------------------------------------------------------
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # (B, *in_shape) -> (B, *out_shape)
        raise NotImplementedError

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:  # (B, *out_shape) -> (B, *in_shape)
        raise NotImplementedError

    # -- shape handling ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_out, n_in)``: the shape of the operator's matrix."""
        return (_prod(self.out_shape), _prod(self.in_shape))

    def _apply(
        self,
        x: torch.Tensor | np.ndarray,
        shape_in: tuple[int, ...],
        shape_out: tuple[int, ...],
        fn: Callable[[torch.Tensor], torch.Tensor],
        what: str,
    ) -> torch.Tensor | np.ndarray:
        as_numpy = isinstance(x, np.ndarray)
        if as_numpy:
            np_dtype = _numpy_dtype(self.dtype)
            if x.dtype.kind not in "biuf":
                raise TypeError(
                    f"{what}: expected a real numpy array of dtype {np_dtype} (the operator's), "
                    f"got dtype {x.dtype}"
                )
            if x.dtype != np_dtype:
                raise TypeError(
                    f"{what}: operator computes in {self.dtype}, the numpy array has dtype {x.dtype}; "
                    f"convert it with .astype(np.{np_dtype})"
                )
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(x)}")
        if x.dtype != self.dtype:
            raise TypeError(
                f"{what}: operator computes in {self.dtype}, input has dtype {x.dtype}; "
                f"convert it with .to({self.dtype})"
            )
        n = _prod(shape_in)
        shp = tuple(x.shape)
        x = x.to(self.device)
        # an empty batch gives an empty result (autograd-based products cannot take it)
        n_out = _prod(shape_out)
        if len(shape_in) > 1 and x.ndim == len(shape_in) + 1 and shp[1:] == shape_in and shp[0] == 0:
            out = x.new_zeros((0, *shape_out))
            return out.cpu().numpy() if as_numpy else out
        if x.ndim == 2 and shp[0] == n and shp[1] == 0:
            out = x.new_zeros((n_out, 0))
            return out.cpu().numpy() if as_numpy else out
        if len(shape_in) == 1 and x.ndim == 2 and shp[1] == n and shp[0] == 0:
            out = x.new_zeros((0, n_out))
            return out.cpu().numpy() if as_numpy else out
        if len(shape_in) > 1 and shp == shape_in:
            out = fn(x.unsqueeze(0))[0]
        elif len(shape_in) > 1 and shp[1:] == shape_in:
            out = fn(x)
        elif x.ndim == 1 and shp[0] == n:
            out = fn(x.reshape(1, *shape_in)).reshape(-1)
        elif x.ndim == 2 and shp[0] == n:
            b = shp[1]
            out = fn(x.T.reshape(b, *shape_in)).reshape(b, -1).T
        elif len(shape_in) == 1 and x.ndim == 2 and shp[1] == n:
            out = fn(x)
        else:
            raise ValueError(
                f"{what}: expected shape {shape_in}, (B, *{shape_in}), ({n},) or ({n}, B); got {shp}"
            )
        return out.detach().cpu().numpy() if as_numpy else out

    def matmat_batch(self, V: torch.Tensor) -> torch.Tensor:
        """``J V`` on a batch ``(B, *in_shape)`` -> ``(B, *out_shape)``, without conversions.

        The hook for algorithms that apply the operator in loops: ``V`` must already have the
        operator's dtype, device and batched shape (:meth:`matmat` checks and converts).
        """
        return self._matmat(V)

    def rmatmat_batch(self, W: torch.Tensor) -> torch.Tensor:
        """``J^T W`` on a batch ``(B, *out_shape)`` -> ``(B, *in_shape)``, without conversions."""
        return self._rmatmat(W)

    def matmat(self, V: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``J V`` for one or a batch of vectors (see the module docstring for shapes)."""
        return self._apply(V, self.in_shape, self.out_shape, self._matmat, "matmat")

    def rmatmat(self, W: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``J^T W`` for one or a batch of vectors (shapes as in :meth:`matmat`, swapped)."""
        return self._apply(W, self.out_shape, self.in_shape, self._rmatmat, "rmatmat")

    matvec = matmat
    rmatvec = rmatmat

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return ComposedOperator([self, other])
        return self.matmat(other)

    def adjoint(self) -> LinearOperator:
        """The adjoint (transpose) operator, sharing this operator's cached state."""
        return AdjointOperator(self)

    @property
    def T(self) -> LinearOperator:  # noqa: N802 - matrix convention
        """The adjoint, as ``op.T``."""
        return self.adjoint()

    # -- exports -----------------------------------------------------------------------------
    def to_scipy(self, dtype: np.dtype | type | str | None = None):
        """A :class:`scipy.sparse.linalg.LinearOperator` on flat real vectors.

        The export is the one place where inputs are converted: SciPy's solvers choose the
        dtype of the vectors they pass, so real (float, integer, bool) vectors of any dtype are
        converted to the operator's dtype before the product, and the results to ``dtype``.
        Complex vectors are refused (``TypeError``): apply the export to their real and
        imaginary parts.

        Args:
            dtype: the real NumPy dtype advertised to SciPy and returned, float32 or float64
                (``np.float32``, ``"float64"``, ``float``, ...; default: the operator's dtype).
                Complex and integer dtypes are refused (``TypeError``).

        Raises:
            TypeError: ``dtype`` is not a real floating dtype (float32 or float64).
        """
        from scipy.sparse.linalg import LinearOperator as SciPyOperator

        np_dtype = _scipy_dtype(dtype) if dtype is not None else _numpy_dtype(self.dtype)
        op_dtype = _numpy_dtype(self.dtype)
        n_out, n_in = self.shape

        def real(x: np.ndarray, what: str) -> np.ndarray:
            x = np.asarray(x)
            if x.dtype.kind not in "biuf":
                raise TypeError(
                    f"to_scipy {what}: expected a real vector (any real dtype, converted to the operator's "
                    f"{op_dtype}), got dtype {x.dtype}; apply the operator to the real and imaginary "
                    "parts of a complex vector"
                )
            return x.astype(op_dtype, copy=False)

        def mv(v: np.ndarray) -> np.ndarray:
            return self.matmat(real(v, "matvec").reshape(n_in)).astype(np_dtype, copy=False)

        def rmv(w: np.ndarray) -> np.ndarray:
            return self.rmatmat(real(w, "rmatvec").reshape(n_out)).astype(np_dtype, copy=False)

        def mm(V: np.ndarray) -> np.ndarray:
            return self.matmat(real(V, "matmat").reshape(n_in, -1)).astype(np_dtype, copy=False)

        def rmm(W: np.ndarray) -> np.ndarray:
            return self.rmatmat(real(W, "rmatmat").reshape(n_out, -1)).astype(np_dtype, copy=False)

        return SciPyOperator((n_out, n_in), matvec=mv, rmatvec=rmv, matmat=mm, rmatmat=rmm, dtype=np_dtype)

    def materialize(
        self, dtype: torch.dtype | None = None, batch_size: int = 256, progress: bool = False
    ) -> torch.Tensor:
        """The dense matrix ``(n_out, n_in)``, built from blocks of identity columns.

        When ``n_out < n_in`` the rows are built from adjoint products instead.

        Args:
            dtype: dtype of the returned matrix, ``torch.float32`` or ``torch.float64``
                (default: the operator's; computation is always in the operator's dtype).
            batch_size: identity columns per block.
            progress: show a progress bar.

        Raises:
            TypeError: ``dtype`` is not ``None``, ``torch.float32`` or ``torch.float64`` (an
                integer, complex or half dtype is refused, not truncated or widened), or
                ``batch_size`` is not an int.
            ValueError: ``batch_size < 1``.
        """
        out_dtype = _float_dtype(dtype, self.dtype, "materialize")
        check_int("batch_size", batch_size)
        n_out, n_in = self.shape
        by_rows = n_out < n_in
        n = n_out if by_rows else n_in
        fn = self._rmatmat if by_rows else self._matmat
        shape_in = self.out_shape if by_rows else self.in_shape
        M = torch.empty((n, n_in if by_rows else n_out), dtype=out_dtype, device=self.device)
        starts = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="materialize", unit="block")
        for s in starts:
            e = min(s + batch_size, n)
            E = torch.zeros((e - s, n), dtype=self.dtype, device=self.device)
            E[torch.arange(e - s), torch.arange(s, e)] = 1
            M[s:e] = fn(E.reshape(e - s, *shape_in)).reshape(e - s, -1).to(out_dtype)
        return M if by_rows else M.T.contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(in_shape={self.in_shape}, out_shape={self.out_shape}, dtype={self.dtype})"
        )


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)


FLOAT_DTYPES = (torch.float32, torch.float64)
"""The dtypes operators compute in and dense matrices are returned in."""


def _float_dtype(dtype, default: torch.dtype, what: str) -> torch.dtype:
    """``dtype`` (``default`` for ``None``) after checking it is float32 or float64."""
    if dtype is None:
        return default
    if not isinstance(dtype, torch.dtype) or dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{what}: dtype must be torch.float32 or torch.float64 (or None: the operator's {default}), "
            f"got {dtype!r}"
        )
    return dtype


def _scipy_dtype(dtype) -> np.dtype:
    """The NumPy dtype of :meth:`LinearOperator.to_scipy`, float32 or float64."""
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    if np_dtype is None or np_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(
            "to_scipy: dtype must be a real NumPy float dtype, float32 or float64 (or None: the "
            f"operator's), got {dtype!r}; complex vectors: apply the operator to their real and "
            "imaginary parts"
        )
    return np_dtype


class AdjointOperator(LinearOperator):
    """The adjoint of an operator (swaps ``_matmat`` and ``_rmatmat``)."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.out_shape, op.in_shape, op.dtype, op.device)
        self.op = op

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.op._rmatmat(V)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        return self.op._matmat(W)

    def adjoint(self) -> LinearOperator:
        """The adjoint operator."""
        return self.op


class ComposedOperator(LinearOperator):
    """A product ``A_1 A_2 ... A_m`` (``A_m`` applied first), as ``A_1 @ A_2 @ ... @ A_m``.

    Args:
        ops: the factors, leftmost first. Nested compositions are flattened.
    """

    def __init__(self, ops: Sequence[LinearOperator]) -> None:
        flat: list[LinearOperator] = []
        for op in ops:
            if not isinstance(op, LinearOperator):
                raise TypeError(f"can only compose LinearOperators, got {type(op).__name__}")
            flat.extend(op.ops if isinstance(op, ComposedOperator) else [op])
        if not flat:
            raise ValueError("a composition needs at least one operator")
        for left, right in zip(flat[:-1], flat[1:], strict=True):
            if left.in_shape != right.out_shape:
                raise ValueError(
                    f"cannot compose: {left!r} takes {left.in_shape}, but {right!r} gives {right.out_shape}"
                )
            if left.dtype != right.dtype:
                raise TypeError(f"cannot compose operators of dtypes {left.dtype}, {right.dtype}")
        super().__init__(flat[-1].in_shape, flat[0].out_shape, flat[0].dtype, flat[0].device)
        self.ops = flat

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.ops):
            V = op._matmat(V)
        return V

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            W = op._rmatmat(W)
        return W

    def __len__(self) -> int:
        return len(self.ops)


class DenseOperator(LinearOperator):
    """An explicit matrix as an operator (tests, small problems).

    Args:
        matrix: ``(n_out, n_in)`` tensor.
        in_shape: input map shape (default ``(n_in,)``).
        out_shape: output map shape (default ``(n_out,)``).
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        in_shape: Sequence[int] | None = None,
        out_shape: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"matrix: expected a torch.Tensor, got {type(matrix).__name__}")
        if matrix.ndim != 2:
            raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
        in_shape = tuple(in_shape) if in_shape is not None else (matrix.shape[1],)
        out_shape = tuple(out_shape) if out_shape is not None else (matrix.shape[0],)
        if _prod(in_shape) != matrix.shape[1] or _prod(out_shape) != matrix.shape[0]:
            raise ValueError(f"matrix {tuple(matrix.shape)} does not fit shapes {out_shape} x {in_shape}")
        super().__init__(in_shape, out_shape, matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        b = V.shape[0]
        return (V.reshape(b, -1) @ self.matrix.T).reshape(b, *self.out_shape)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        b = W.shape[0]
        return (W.reshape(b, -1) @ self.matrix).reshape(b, *self.in_shape)

    def materialize(self, dtype=None, batch_size: int = 256, progress: bool = False):
        """The dense matrix ``(n_out, n_in)`` (``dtype``: as in :meth:`LinearOperator.materialize`)."""
        out_dtype = _float_dtype(dtype, self.dtype, "materialize")
        check_int("batch_size", batch_size)
        return self.matrix.to(out_dtype).clone()


class IdentityOperator(LinearOperator):
    """The identity on maps of a given shape."""

    def __init__(self, shape: Sequence[int], dtype: torch.dtype, device="cpu") -> None:
        super().__init__(shape, shape, dtype, device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return V

    _rmatmat = _matmat


class CallableOperator(LinearOperator):
    """An operator from two batched callables ``(B, *in) -> (B, *out)`` and its adjoint."""

    def __init__(
        self,
        matmat: Callable[[torch.Tensor], torch.Tensor],
        rmatmat: Callable[[torch.Tensor], torch.Tensor],
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        dtype: torch.dtype,
        device="cpu",
    ) -> None:
        super().__init__(in_shape, out_shape, dtype, device)
        self._mm = matmat
        self._rmm = rmatmat

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._mm(V)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        return self._rmm(W)
