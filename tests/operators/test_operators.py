"""Dense twins: every unit, stage and network operator against torch.func Jacobians (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from factories import NET_KINDS, dense_jacobian, make_net, tiny_image

from linstab.operators import (
    AutodiffJacobian,
    ComposedOperator,
    DenseOperator,
    IdentityOperator,
    LinearOperator,
    RowSubset,
    output_mask,
)

RTOL = 1e-10  # closed form vs autodiff vs torch.func dense, float64


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


@pytest.mark.parametrize("kind", NET_KINDS)
def test_unit_operators_match_torch_func(kind):
    if kind == "pytorchcv":
        pytest.importorskip("pytorchcv")
    net = make_net(kind, seed=NET_KINDS.index(kind))
    lin = net.linearize(tiny_image(3), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    kinds_seen = set()
    for i, u in enumerate(net.units):
        kinds_seen.add(u.kind)
        x = lin.inputs[i][0]
        D = dense_jacobian(u.module, x, forward=(i % 2 == 0))
        V = torch.randn((5, *u.in_shape), generator=g, dtype=torch.float64)
        W = torch.randn((5, *u.out_shape), generator=g, dtype=torch.float64)
        for method in ("closed", "autodiff"):
            J = lin.unit(u.stage, u.index, method)
            assert J.in_shape == u.in_shape and J.out_shape == u.out_shape
            assert J.shape == (u.n_out, u.n_in)
            # blocks of vectors
            JV = (J @ V).reshape(5, -1)
            assert rel(JV, V.reshape(5, -1) @ D.T) < RTOL, (kind, u.address, method)
            JTW = (J.T @ W).reshape(5, -1)
            assert rel(JTW, W.reshape(5, -1) @ D) < RTOL, (kind, u.address, method)
            # single vectors, flat and map-shaped
            v = V[0]
            assert rel(J @ v.reshape(-1), D @ v.reshape(-1)) < RTOL
            assert rel((J @ v).reshape(-1), D @ v.reshape(-1)) < RTOL
            # flat column blocks (n, B)
            cols = V.reshape(5, -1).T.contiguous()
            assert rel(J @ cols, D @ cols) < RTOL
            # adjoint identity <J v, w> = <v, J^T w>
            lhs = float(((J @ v) * W[0]).sum())
            rhs = float((v * (J.T @ W[0])).sum())
            assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
            # dense materialization
            assert rel(J.materialize(), D) < RTOL
    if kind in ("option-A", "option-B", "tv-basic", "akamaster", "pytorchcv"):
        assert {"regular", "downsampling"} <= kinds_seen


@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-bottleneck"])
def test_stage_and_network_operators(kind):
    net = make_net(kind, seed=7)
    lin = net.linearize(tiny_image(4), dtype=torch.float64)
    for s, units in enumerate(net.stages, start=1):
        S = lin.stage(s)
        assert isinstance(S, ComposedOperator) and len(S) == len(units)
        i0 = net.units.index(units[0])
        seq = torch.nn.Sequential(*[u.module for u in units])
        D = dense_jacobian(seq, lin.inputs[i0][0])
        assert rel(S.materialize(), D) < RTOL
        assert rel(S.T.materialize(), D.T) < RTOL
    N = lin.network()
    seq = torch.nn.Sequential(*[u.module for u in net.units])
    D = dense_jacobian(seq, lin.inputs[0][0])
    assert N.shape == tuple(D.shape)
    assert rel(N.materialize(), D) < RTOL
    # the network is the product of the stages
    P = lin.stage(1)
    for s in range(2, len(net.stages) + 1):
        P = lin.stage(s) @ P
    v = torch.randn(N.in_shape, dtype=torch.float64)
    assert rel(P @ v, N @ v) < 1e-13


def test_relu_at_zero_convention():
    """relu'(0) = 0 in both implementations: a unit whose pre-activations are exactly 0."""
    net = make_net("option-B", seed=3)
    unit = net.units[0]
    canon = unit.canonical
    lin = net.linearize(tiny_image(0), dtype=torch.float64)
    x0 = torch.zeros((1, *unit.in_shape), dtype=torch.float64)
    # zero input: the residual branch sees BN shifts only; zero the BN shifts on a copy
    import copy

    from linstab.operators import AutodiffJacobian, UnitJacobian

    c = copy.deepcopy(canon)
    with torch.no_grad():
        for m in c.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_()
                m.bias.zero_()
    Jc = UnitJacobian(c, x0, torch.float64)
    Ja = AutodiffJacobian(c, x0, torch.float64)
    assert float(Jc.out_deriv.abs().sum()) == 0.0  # every pre-activation is exactly 0
    M = Ja.materialize()
    assert float(M.abs().max()) == 0.0
    assert float(Jc.materialize().abs().max()) == 0.0
    assert lin is not None


def test_operator_input_validation():
    net = make_net("option-A")
    lin = net.linearize(tiny_image(), dtype=torch.float64)
    J = lin.unit(1, 1)
    with pytest.raises(TypeError, match="float64"):
        J @ torch.zeros(J.in_shape, dtype=torch.float32)
    with pytest.raises(ValueError, match="expected shape"):
        J @ torch.zeros((3, 5), dtype=torch.float64)
    with pytest.raises(ValueError, match="cannot compose"):
        lin.unit(1, 1) @ lin.unit(2, 1)
    with pytest.raises(TypeError):
        ComposedOperator([J, "not an operator"])
    with pytest.raises(ValueError, match="method"):
        lin.unit(1, 1, "magic")
    with pytest.raises(ValueError, match="stage"):
        lin.unit(9, 1)


def test_numpy_and_scipy_exports():
    net = make_net("option-B", seed=2)
    lin = net.linearize(tiny_image(1), dtype=torch.float64)
    J = lin.unit(2, 1)
    D = J.materialize().numpy()
    rng = np.random.default_rng(0)
    v = rng.standard_normal(J.shape[1])
    w = rng.standard_normal(J.shape[0])
    assert np.allclose(J @ v, D @ v, rtol=1e-12, atol=1e-12)
    A = J.to_scipy()
    assert A.shape == J.shape
    assert np.allclose(A @ v, D @ v, rtol=1e-12, atol=1e-12)
    assert np.allclose(A.rmatvec(w), D.T @ w, rtol=1e-12, atol=1e-12)
    V = rng.standard_normal((J.shape[1], 3))
    assert np.allclose(A.matmat(V), D @ V, rtol=1e-12, atol=1e-12)
    s = spla.svds(A, k=3, return_singular_vectors=False, random_state=0)
    ref = np.linalg.svd(D, compute_uv=False)[:3]
    assert np.allclose(np.sort(s)[::-1], ref, rtol=1e-8)


def test_other_dtypes_are_refused_not_cast():
    """NumPy inputs follow the tensors' rule (a float32 array on a float64 operator was cast
    silently); ``materialize``/``to_scipy`` return float32 or float64 only (an integer dtype
    truncated the matrix, a complex one was advertised to SciPy and then refused every vector);
    the SciPy export converts SciPy's real vectors explicitly, against the dense twin."""
    net = make_net("option-B", seed=2)
    x = tiny_image(1)
    J = net.linearize(x, dtype=torch.float64).unit(2, 1)
    J32 = net.linearize(x, dtype=torch.float32).unit(2, 1)
    D = dense_jacobian(net.units[2].module, net.linearize(x, dtype=torch.float64).inputs[2][0]).numpy()
    assert np.allclose(J.materialize().numpy(), D, atol=1e-12)
    rng = np.random.default_rng(0)
    v, w = rng.standard_normal(J.shape[1]), rng.standard_normal(J.shape[0])
    for op, bad in ((J, v.astype(np.float32)), (J, np.ones(J.shape[1], dtype=np.int64)), (J32, v)):
        with pytest.raises(TypeError, match=r"computes in torch\.float(32|64).*astype"):
            op @ bad
    with pytest.raises(TypeError, match="astype"):
        J.T @ w.astype(np.float32)
    assert np.allclose(J32 @ v.astype(np.float32), D @ v, atol=1e-4)
    for bad in (torch.int32, torch.int64, torch.complex128, torch.float16, np.float64, "float64"):
        for op in (J, DenseOperator(torch.from_numpy(D))):
            with pytest.raises(
                TypeError, match=r"materialize: dtype must be torch\.float32 or torch\.float64"
            ):
                op.materialize(dtype=bad)
    assert J.materialize(dtype=torch.float32).dtype == torch.float32
    for bad in (np.int32, int, complex, np.complex128, "complex64", torch.float64, np.float16):
        with pytest.raises(TypeError, match="to_scipy: dtype must be a real NumPy float dtype"):
            J.to_scipy(dtype=bad)
    for dt in (np.float32, "float64", float):
        A = J.to_scipy(dtype=dt)
        assert A.dtype == np.dtype(dt) and (A @ v).dtype == np.dtype(dt)
        assert np.allclose(A @ v, D @ v, rtol=1e-5, atol=1e-5)
    A = J.to_scipy()
    v32 = v.astype(np.float32)
    assert (A @ v32).dtype == np.float64 and np.allclose(A @ v32, D @ v32.astype(np.float64), atol=1e-12)
    assert np.allclose(A.rmatvec(np.ones(J.shape[0], dtype=np.int64)), D.T @ np.ones(J.shape[0]), atol=1e-12)
    with pytest.raises(TypeError, match="real and imaginary parts"):
        A @ (v * 1j)
    A32 = J32.to_scipy()  # SciPy's float64 vectors on a float32 operator
    assert A32.dtype == np.float32 and np.allclose(A32.matmat(np.eye(J.shape[1])[:, :3]), D[:, :3], atol=1e-4)


def test_generic_operators():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 4, generator=g, dtype=torch.float64)
    B = torch.randn(4, 5, generator=g, dtype=torch.float64)
    opA = DenseOperator(A, in_shape=(2, 2), out_shape=(6,))
    opB = DenseOperator(B, in_shape=(5,), out_shape=(2, 2))
    C = opA @ opB
    assert C.shape == (6, 5)
    assert torch.allclose(C.materialize(), A @ B)
    assert torch.allclose(C.T.materialize(), (A @ B).T)
    assert C.T.T is C
    Id = IdentityOperator((5,), torch.float64)
    assert torch.allclose((C @ Id).materialize(), A @ B)
    with pytest.raises(ValueError):
        DenseOperator(torch.zeros(3, 4), in_shape=(5,))
    assert isinstance(C, LinearOperator)
    assert "in_shape" in repr(C)


@pytest.mark.parametrize("kind", ["option-B", "tv-bottleneck"])
def test_row_subset_matches_its_dense_twin(kind):
    """``RowSubset(J, mask)`` is ``J[mask]`` (rows of J's float64 dense matrix), its adjoint
    ``J[mask]^T``, and ``expand`` puts columns back on the kept rows."""
    net = make_net(kind, seed=4)
    J = net.linearize(tiny_image(1), dtype=torch.float64).unit(1, 2)
    M = J.materialize()
    rows = J.out_deriv.reshape(-1) != 0
    assert 0 < int(rows.sum()) < rows.numel()  # the unit has exact zero rows
    op = RowSubset(J, rows)
    assert op.shape == (int(rows.sum()), J.shape[1]) and op.label == J.label
    assert torch.allclose(op.materialize(), M[rows], atol=1e-12)
    assert torch.allclose(op.T.materialize(), M[rows].T, atol=1e-12)
    U = torch.randn(op.shape[0], 3, dtype=torch.float64)
    full = op.expand(U)
    assert full.shape == (J.shape[0], 3) and torch.equal(full[rows], U) and not full[~rows].any()
    with pytest.raises(ValueError, match="no row"):
        RowSubset(J, torch.zeros_like(rows))
    with pytest.raises(ValueError, match="shape"):
        RowSubset(J, rows[:-1])
    with pytest.raises(TypeError, match="boolean"):
        RowSubset(J, rows.double())


@pytest.mark.parametrize("kind", ["option-A", "option-B", "tv-bottleneck"])
def test_output_mask_marks_every_zero_row(kind):
    """``output_mask``: a unit's and a composition's inactive rows are zero rows of their float64
    dense twins; an operator without a known mask gives ``None``."""
    net = make_net(kind, seed=4)
    lin = net.linearize(tiny_image(1), dtype=torch.float64)
    for op, what in ((lin.unit(1, 2), "unit"), (lin.stage(2), "last unit"), (lin.network(), "last unit")):
        mask, source = output_mask(op)
        assert mask.dtype == torch.bool and mask.shape == (op.shape[0],) and what in source
        M = op.materialize()
        assert 0 < int(mask.sum()) < mask.numel()
        assert not M[~mask].any()
    mask, source = output_mask(DenseOperator(torch.ones(3, 4, dtype=torch.float64)))
    assert mask is None and "no known" in source
    with pytest.raises(TypeError, match="LinearOperator"):
        output_mask(3)


@pytest.mark.parametrize("method", ["closed", "autodiff"])
def test_empty_batches_complex_input_and_bad_block_sizes(method):
    """An empty batch gives an empty result in every accepted layout (no crash: autodiff
    products cannot take one); complex NumPy input and bad ``batch_size`` are refused."""
    net = make_net("option-B", seed=1)
    lin = net.linearize(tiny_image(1), dtype=torch.float64)
    J = lin.unit(1, 1, method=method)
    n_out, n_in = J.shape
    f64 = torch.float64
    assert J.matmat(torch.zeros(0, *J.in_shape, dtype=f64)).shape == (0, *J.out_shape)
    assert J.rmatmat(torch.zeros(0, *J.out_shape, dtype=f64)).shape == (0, *J.in_shape)
    assert (J.T @ torch.zeros(0, *J.out_shape, dtype=f64)).shape == (0, *J.in_shape)
    assert J.matmat(torch.zeros(n_in, 0, dtype=f64)).shape == (n_out, 0)
    assert J.rmatmat(np.zeros((n_out, 0))).shape == (n_in, 0)
    with pytest.raises(TypeError, match="real numpy array"):
        J @ (np.ones(n_in) * 1j)
    with pytest.raises(TypeError, match="real numpy array"):
        J.matmat(np.array([object()] * n_in))
    for bs, err in ((0, ValueError), (-1, ValueError), (1.5, TypeError)):
        with pytest.raises(err, match="batch_size must be an int >= 1"):
            J.materialize(batch_size=bs)
    assert torch.equal(J.materialize(batch_size=7), J.materialize())


def test_autodiff_jacobian_keeps_a_single_channel():
    """A one-channel point ``(1, H, W)`` is the point itself, not a batch of one; ``in_shape``
    settles any other ambiguity and is checked."""
    conv = torch.nn.Conv2d(1, 2, 3, padding=1).double().eval()
    x = torch.rand(1, 5, 5, dtype=torch.float64)
    dense = dense_jacobian(conv, x)
    for point, kw in ((x, {}), (x[None], {}), (x, {"in_shape": (1, 5, 5)})):
        J = AutodiffJacobian(conv, point, torch.float64, **kw)
        assert J.in_shape == (1, 5, 5) and J.out_shape == (2, 5, 5)
        assert torch.allclose(J.materialize(), dense, atol=1e-12)
    lin = torch.nn.Linear(4, 3).double().eval()
    assert AutodiffJacobian(lin, torch.rand(1, 4, dtype=torch.float64), torch.float64).in_shape == (4,)
    with pytest.raises(ValueError, match="expected shape"):
        AutodiffJacobian(conv, x, torch.float64, in_shape=(1, 4, 4))


def test_float32_operators_close_to_float64():
    net = make_net("option-A", seed=5)
    x = tiny_image(2)
    l32 = net.linearize(x, dtype=torch.float32)
    l64 = net.linearize(x, dtype=torch.float64)
    J32, J64 = l32.unit(2, 1), l64.unit(2, 1)
    assert J32.dtype == torch.float32
    assert rel(J32.materialize(torch.float64), J64.materialize()) < 1e-5


def test_operators_of_other_dtypes_or_non_tensor_matrices_are_refused():
    """A DenseOperator of an integer or half matrix was accepted (its products then truncated or
    lost precision); operators are float32 or float64."""
    import numpy as np

    from linstab.operators import DenseOperator

    for dtype in (torch.int64, torch.float16, torch.bfloat16, torch.complex128):
        with pytest.raises(TypeError, match="float32 or torch.float64, got"):
            DenseOperator(torch.ones(3, 2, dtype=dtype))
    with pytest.raises(TypeError, match="expected a torch.Tensor, got ndarray"):
        DenseOperator(np.ones((3, 2)))
    assert DenseOperator(torch.ones(3, 2, dtype=torch.float32)).dtype == torch.float32


@pytest.mark.parametrize("act", [torch.nn.LeakyReLU, torch.nn.SiLU, torch.nn.ELU])
def test_closed_form_of_a_unit_with_in_place_activations(act):
    """A ``ResidualUnit`` with ``act(inplace=True)`` (other than ReLU) had the derivative's jvp
    overwrite its pre-activations and the activation applied twice: the closed form's output and
    Jacobian were wrong."""
    from factories import make_unit_module

    from linstab.operators import UnitJacobian

    unit, x = make_unit_module(act=lambda: act(inplace=True))
    reference, _ = make_unit_module(act=act)
    J = UnitJacobian(unit, x, torch.float64)
    with torch.no_grad():
        assert torch.allclose(J.output, reference(x)[0], atol=1e-13)
        assert torch.allclose(
            J.blocks[0].preactivation, reference.body.conv1.bn(reference.body.conv1.conv(x))[0]
        )
    assert rel(J.materialize(), dense_jacobian(reference, x[0])) < RTOL


class _OldStyleSwish(torch.autograd.Function):
    """An ``autograd.Function`` without ``setup_context`` (memory-efficient Swish, EfficientNet ports)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * s * (1 + x * (1 - s))


class _SwishConv(torch.nn.Module):
    def __init__(self, checkpoint: bool = False) -> None:
        super().__init__()
        self.conv, self.checkpoint = torch.nn.Conv2d(2, 2, 3, padding=1), checkpoint

    def forward(self, x):
        if self.checkpoint:
            from torch.utils.checkpoint import checkpoint

            return x + checkpoint(self.conv, x, use_reentrant=False)
        return x + _OldStyleSwish.apply(self.conv(x))


@pytest.mark.parametrize("checkpoint", [False, True])
def test_autodiff_refuses_forward_passes_torch_func_cannot_differentiate(checkpoint):
    """An old-style ``autograd.Function`` or ``torch.utils.checkpoint`` in a unit raised torch's
    RuntimeError from deep inside ``torch.func``, naming neither the unit nor a remedy."""
    module = _SwishConv(checkpoint).eval()
    x = torch.rand(2, 5, 5, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"unit 9\.9: torch\.func cannot differentiate.*RuntimeError"
    ) as info:
        AutodiffJacobian(module, x, torch.float64, label="unit 9.9")
    assert isinstance(info.value.__cause__, RuntimeError)
