"""Sparse factors of closed-form unit Jacobians, ``J = D_out (alpha S + U W)``, factored through
the masked inner layer with the fewest active units (the one factor plan), and operators built
from them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .base import ComposedOperator, LinearOperator
from .closed_form import UnitJacobian


def _blk_conv(blk, V: torch.Tensor) -> torch.Tensor:
    """``B C V`` in ``V``'s dtype (the block's cached pieces cast)."""
    w = blk.weight.to(V.dtype)
    y = F.conv2d(V, w, None, blk.stride, blk.padding, blk.dilation, blk.groups)
    return y * blk.scale.to(V.dtype).view(1, -1, 1, 1)


def _blk_conv_t(blk, W: torch.Tensor) -> torch.Tensor:
    """``C^T B W`` in ``W``'s dtype."""
    W = W * blk.scale.to(W.dtype).view(1, -1, 1, 1)
    k = blk.weight.shape[-2:]
    out_pad = tuple(
        blk.in_hw[i]
        - ((blk.out_hw[i] - 1) * blk.stride[i] - 2 * blk.padding[i] + blk.dilation[i] * (k[i] - 1) + 1)
        for i in range(2)
    )
    return F.conv_transpose2d(
        W, blk.weight.to(W.dtype), None, blk.stride, blk.padding, out_pad, blk.groups, blk.dilation
    )


def is_mask(d: torch.Tensor | None) -> bool:
    """Whether ``d`` is a 0/1 mask (a ReLU derivative)."""
    return d is not None and bool(((d == 0) | (d == 1)).all())


def unit_products(op: UnitJacobian, dtype: torch.dtype):
    """Batched ``J V`` and ``J^T W`` of a unit Jacobian computed in ``dtype``."""

    def cast(t):
        return None if t is None else t.to(dtype)

    derivs = [cast(b.deriv) for b in op.blocks]
    out_d = cast(op.out_deriv)
    alpha = op.alpha

    def skip(V):
        if op.shortcut_kind == "conv-bn":
            return _blk_conv(op.shortcut, V)
        return op.skip(V)

    def skip_t(W):
        if op.shortcut_kind == "conv-bn":
            return _blk_conv_t(op.shortcut, W)
        return op.skip_t(W)

    def mv(V):
        y = V
        for blk, d in zip(op.blocks, derivs, strict=True):
            y = _blk_conv(blk, y)
            if d is not None:
                y = y * d
        y = y + alpha * skip(V)
        return y if out_d is None else y * out_d

    def rmv(W):
        if out_d is not None:
            W = W * out_d
        y = W
        for blk, d in zip(reversed(op.blocks), reversed(derivs), strict=True):
            if d is not None:
                y = y * d
            y = _blk_conv_t(blk, y)
        return y + alpha * skip_t(W)

    return mv, rmv


def conv_columns(blk, idx: np.ndarray, transpose: bool) -> sp.csc_matrix:
    """Columns ``B C e_t`` (or ``C^T B e_t`` when ``transpose``) of one conv + BN, in float64,
    from the kernel by index arithmetic (no convolution is run).

    Args:
        blk: a :class:`~linstab.operators.ConvBNLinearization`.
        idx: flat indices ``t`` into the conv's input (or, transposed, output) map.
        transpose: build columns of ``C^T B`` instead of ``B C``.

    Returns:
        sparse ``(n_out_side, len(idx))`` matrix.
    """
    w = blk.weight.detach().to(torch.float64).cpu().numpy()
    sc = blk.scale.detach().to(torch.float64).cpu().numpy()
    co_n, cig, kh_n, kw_n = w.shape
    g = blk.groups
    ci_n, cog = cig * g, co_n // g
    (sh, sw), (ph, pw), (dh, dw) = blk.stride, blk.padding, blk.dilation
    hin, win = blk.in_hw
    hout, wout = blk.out_hw
    idx = np.asarray(idx, dtype=np.int64)
    rows, cols, vals = [], [], []
    if not transpose:
        ci, h, x = np.unravel_index(idx, (ci_n, hin, win))
        grp, cil = ci // cig, ci % cig
        for kh in range(kh_n):
            for kw in range(kw_n):
                nh, nw = h + ph - kh * dh, x + pw - kw * dw
                i, j = nh // sh, nw // sw
                ok = (nh % sh == 0) & (nw % sw == 0) & (i >= 0) & (i < hout) & (j >= 0) & (j < wout)
                sel = np.nonzero(ok)[0]
                co = grp[sel, None] * cog + np.arange(cog)[None, :]
                vals.append((w[co, cil[sel, None], kh, kw] * sc[co]).ravel())
                rows.append(((co * hout + i[sel, None]) * wout + j[sel, None]).ravel())
                cols.append(np.broadcast_to(sel[:, None], co.shape).ravel())
        shape = (co_n * hout * wout, idx.size)
    else:
        co, i, j = np.unravel_index(idx, (co_n, hout, wout))
        grp = co // cog
        for kh in range(kh_n):
            for kw in range(kw_n):
                h, x = i * sh + kh * dh - ph, j * sw + kw * dw - pw
                ok = (h >= 0) & (h < hin) & (x >= 0) & (x < win)
                sel = np.nonzero(ok)[0]
                ci = grp[sel, None] * cig + np.arange(cig)[None, :]
                vals.append((w[co[sel, None], np.arange(cig)[None, :], kh, kw] * sc[co[sel, None]]).ravel())
                rows.append(((ci * hin + h[sel, None]) * win + x[sel, None]).ravel())
                cols.append(np.broadcast_to(sel[:, None], ci.shape).ravel())
        shape = (ci_n * hin * win, idx.size)
    M = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    M.eliminate_zeros()
    return M


def _impulse_columns(fn, idx: np.ndarray, shape_in: tuple[int, ...], n_out: int) -> sp.csc_matrix:
    """Columns ``fn(e_t)`` for ``t`` in ``idx`` by batched impulses in float64 (exact zeros kept)."""
    n_in = int(np.prod(shape_in))
    idx = np.asarray(idx, dtype=np.int64)
    bs = max(1, min(512, (1 << 22) // max(n_in, n_out)))
    rows, cols, vals = [], [], []
    for s in range(0, idx.size, bs):
        e = torch.as_tensor(idx[s : s + bs])
        E = torch.zeros((e.numel(), n_in), dtype=torch.float64)
        E[torch.arange(e.numel()), e] = 1
        Y = fn(E.reshape(e.numel(), *shape_in)).reshape(e.numel(), -1)
        nz = torch.nonzero(Y, as_tuple=True)
        rows.append(nz[1].numpy())
        cols.append(nz[0].numpy() + s)
        vals.append(Y[nz].numpy())
    if not rows:
        return sp.csc_matrix((n_out, 0))
    return sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, idx.size)
    )


def _grid_keys(shape: tuple[int, ...], out_hw: tuple[int, int]) -> np.ndarray:
    """Row-major spatial position on the ``out_hw`` grid of every entry of a ``(C, H, W)`` map."""
    c, h, w = shape
    hh = (np.arange(h) * out_hw[0]) // h
    ww = (np.arange(w) * out_hw[1]) // w
    key = hh[:, None] * out_hw[1] + ww[None, :]
    return np.broadcast_to(key[None], (c, h, w)).reshape(-1)


@dataclass
class UnitFactors:
    """Sparse factors of a unit Jacobian ``J = D_out (alpha S + U W)`` (float64).

    ``U = (tail of the body) E_T`` and ``W = E_T^T (head of the body)`` split the residual
    branch at the masked inner layer ``layer`` with the fewest active units ``T``.

    Attributes:
        layer: 0-based index of the body block whose ReLU mask is factored through.
        alpha: skip scale.
        shortcut: ``"identity"``, ``"subsample-pad"`` or ``"conv-bn"``.
        out_active: active output indices ``S`` (``m`` of them), sorted.
        inner_active: active inner indices ``T`` (``r`` of them).
        U: ``(n_out, r)`` sparse.
        Wt: ``W^T``, ``(n_in, r)`` sparse.
        skip: the shortcut matrix ``(n_out, n_in)`` (``None`` for the identity).
        out_keys: spatial order key of each output, ``(n_out,)``.
        inner_keys: spatial order key of each active inner unit, ``(r,)``.
        n_out, n_in: operator shape.
        seconds: build time.
    """

    layer: int
    alpha: float
    shortcut: str
    out_active: np.ndarray
    inner_active: np.ndarray
    U: sp.csc_matrix
    Wt: sp.csc_matrix
    skip: sp.csr_matrix | None
    out_keys: np.ndarray
    inner_keys: np.ndarray
    n_out: int
    n_in: int
    seconds: float = 0.0

    @property
    def m(self) -> int:
        """Number of active outputs."""
        return int(self.out_active.size)

    @property
    def r(self) -> int:
        """Number of active units of the factored inner layer."""
        return int(self.inner_active.size)


def factor_plan(op: LinearOperator) -> tuple[int | None, str]:
    """The inner layer to factor through, or ``None`` and the reason there is none."""
    if not isinstance(op, UnitJacobian):
        return None, f"{type(op).__name__} is not a closed-form unit Jacobian"
    if op.out_deriv is not None and not is_mask(op.out_deriv):
        return None, "the outer activation derivative is not a 0/1 mask (non-ReLU activation)"
    best, best_r = None, None
    for i, blk in enumerate(op.blocks):
        if is_mask(blk.deriv):
            r = int(blk.deriv.sum())
            if best_r is None or r < best_r:
                best, best_r = i, r
    if best is None:
        return None, "no inner layer has a 0/1 (ReLU) mask"
    return best, ""


def unit_factors(op: LinearOperator) -> UnitFactors | None:
    """Sparse factors ``J = D_out (alpha S + U W)`` of a closed-form unit Jacobian.

    Returns ``None`` when the unit has no factorization (not a :class:`UnitJacobian`, a
    non-ReLU outer activation, or no inner 0/1 mask). Single conv + BN pieces are built from
    the kernel directly, longer chains (Bottleneck units) from batched impulses.
    """
    layer, _ = factor_plan(op)
    if layer is None:
        return None
    t0 = time.perf_counter()
    blocks = op.blocks
    n_out, n_in = op.shape
    inner = blocks[layer]
    inner_shape = tuple(inner.preactivation.shape)
    T = torch.nonzero(inner.deriv.reshape(-1)).flatten().cpu().numpy()
    if op.out_deriv is None:
        S = np.arange(n_out)
    else:
        S = torch.nonzero(op.out_deriv.reshape(-1)).flatten().cpu().numpy()
    tail = blocks[layer + 1 :]
    if len(tail) == 1 and tail[0].deriv is None:
        U = conv_columns(tail[0], T, transpose=False)
    else:
        derivs = [None if b.deriv is None else b.deriv.to(torch.float64) for b in tail]

        def tail_fn(V):
            for blk, d in zip(tail, derivs, strict=True):
                V = _blk_conv(blk, V)
                if d is not None:
                    V = V * d
            return V

        U = _impulse_columns(tail_fn, T, inner_shape, n_out)
    if layer == 0:
        Wt = conv_columns(blocks[0], T, transpose=True)
    else:
        head = blocks[: layer + 1]
        hderivs = [None if b.deriv is None else b.deriv.to(torch.float64) for b in head]

        def head_t(Y):
            for i in range(layer, -1, -1):
                if i < layer and hderivs[i] is not None:
                    Y = Y * hderivs[i]
                Y = _blk_conv_t(head[i], Y)
            return Y

        Wt = _impulse_columns(head_t, T, inner_shape, n_in)
    skip = None
    if op.shortcut_kind == "subsample-pad":
        scm = op.shortcut
        c_in, h_in, w_in = op.in_shape
        c_out, h_out, w_out = op.out_shape
        c, i, j = np.meshgrid(np.arange(c_in), np.arange(h_out), np.arange(w_out), indexing="ij")
        src = (c * h_in + i * scm.stride) * w_in + j * scm.stride
        dst = ((c + scm.pad_front) * h_out + i) * w_out + j
        skip = sp.csr_matrix((np.ones(src.size), (dst.ravel(), src.ravel())), shape=(n_out, n_in))
    elif op.shortcut_kind == "conv-bn":
        skip = conv_columns(op.shortcut, np.arange(n_in), transpose=False).tocsr()
    out_hw = tuple(op.out_shape[-2:])
    return UnitFactors(
        layer=layer,
        alpha=float(op.alpha),
        shortcut=op.shortcut_kind,
        out_active=S,
        inner_active=T,
        U=U.tocsc(),
        Wt=Wt.tocsc(),
        skip=skip,
        out_keys=_grid_keys(tuple(op.out_shape), out_hw),
        inner_keys=_grid_keys(inner_shape, out_hw)[T],
        n_out=n_out,
        n_in=n_in,
        seconds=time.perf_counter() - t0,
    )


class FactorOperator(LinearOperator):
    """A unit Jacobian applied through its sparse factors ``D_out (alpha S + U W)``.

    Same matrix as the unit's :class:`~linstab.operators.UnitJacobian` (to rounding), with
    products 2-4x cheaper than the convolutions: SciPy CSR products on the CPU, torch sparse CSR
    products on other devices. Used by the iterative solvers (``products="auto"``).

    Args:
        f: the factors (see :func:`unit_factors`).
        op: the unit operator they were built from (shapes, dtype, device).
    """

    def __init__(self, f: UnitFactors, op: LinearOperator) -> None:
        super().__init__(op.in_shape, op.out_shape, op.dtype, op.device)
        npd = np.float64 if op.dtype == torch.float64 else np.float32
        mask = np.zeros(f.n_out, dtype=npd)
        mask[f.out_active] = 1
        self.alpha = f.alpha
        mats = {
            "W": f.Wt.T.tocsr(),
            "Wt": f.Wt.tocsr(),
            "U": f.U.tocsr(),
            "Ut": f.U.T.tocsr(),
            "S": None if f.skip is None else f.skip.tocsr(),
            "St": None if f.skip is None else f.skip.T.tocsr(),
        }
        self._cpu = self.device.type == "cpu"
        if self._cpu:
            self._m = {k: (None if v is None else v.astype(npd)) for k, v in mats.items()}
            self._mask = mask[None, :]
        else:
            self._m = {
                k: (None if v is None else _torch_csr(v, op.dtype, self.device)) for k, v in mats.items()
            }
            self._mask = torch.from_numpy(mask).to(self.device)[:, None]

    def _fapply(self, X, fwd: bool):
        m = self._m
        if self._cpu:
            if fwd:
                Y = (m["U"] @ (m["W"] @ X.T)).T
                Y += self.alpha * (X if m["S"] is None else (m["S"] @ X.T).T)
                return Y * self._mask
            X = X * self._mask
            Y = (m["Wt"] @ (m["Ut"] @ X.T)).T
            return Y + self.alpha * (X if m["St"] is None else (m["St"] @ X.T).T)
        mm = torch.sparse.mm
        Xt = X.T
        if fwd:
            Y = mm(m["U"], mm(m["W"], Xt)) + self.alpha * (Xt if m["S"] is None else mm(m["S"], Xt))
            return (Y * self._mask).T
        Xt = Xt * self._mask
        Y = mm(m["Wt"], mm(m["Ut"], Xt)) + self.alpha * (Xt if m["St"] is None else mm(m["St"], Xt))
        return Y.T

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        b = V.shape[0]
        X = V.reshape(b, -1)
        if self._cpu:
            Y = self._fapply(X.detach().numpy(), True)
            return torch.from_numpy(np.ascontiguousarray(Y)).reshape(b, *self.out_shape)
        return self._fapply(X, True).contiguous().reshape(b, *self.out_shape)

    def _rmatmat(self, W: torch.Tensor) -> torch.Tensor:
        b = W.shape[0]
        X = W.reshape(b, -1)
        if self._cpu:
            Y = self._fapply(X.detach().numpy(), False)
            return torch.from_numpy(np.ascontiguousarray(Y)).reshape(b, *self.in_shape)
        return self._fapply(X, False).contiguous().reshape(b, *self.in_shape)


def _torch_csr(M: sp.spmatrix, dtype: torch.dtype, device) -> torch.Tensor:
    M = M.tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(np.int64)),
            torch.from_numpy(M.indices.astype(np.int64)),
            torch.from_numpy(M.data).to(dtype),
            size=M.shape,
        ).to(device)


def factor_operator(op: LinearOperator) -> LinearOperator | None:
    """The sparse-factor twin of a unit Jacobian, or of a composition of them (a stage or the
    network); ``None`` when some factor does not exist (see :func:`unit_factors`).
    """
    if isinstance(op, ComposedOperator):
        parts = [factor_operator(o) for o in op.ops]
        if any(p is None for p in parts):
            return None
        return ComposedOperator(parts)
    f = unit_factors(op)
    return None if f is None else FactorOperator(f, op)


def structured_plan(op: LinearOperator) -> tuple[bool, str]:
    """Whether the structured (identity plus low rank) route applies, and why not."""
    layer, why = factor_plan(op)
    if layer is None:
        return False, why
    if op.shortcut_kind != "identity" or op.in_shape != op.out_shape:
        return False, f"shortcut {op.shortcut_kind!r}: J_S J_S^T is not identity plus low rank"
    return True, ""
