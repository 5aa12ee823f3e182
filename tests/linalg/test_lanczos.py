"""Batched Lanczos and quadrature (linstab.linalg.lanczos / quadrature) against dense twins.

Checks the recurrence itself (orthonormal basis, ``Q^T A Q = T``, batched = one at a time), the
Gauss weights (squared first components: moments of the rule equal ``z^T A^j z``), breakdown
(exact rules), the Chebyshev-Markov-Stieltjes bounds against exact per-probe distribution
functions, selective orthogonalization against top singular vectors, input errors and that no
value is copied to the host inside the iteration.
"""

from __future__ import annotations

import pytest
import torch
from factories import F64, gram_eig, levels, nan_operator, planted

from linstab import spectra as S
from linstab.linalg import (
    gauss_quadrature,
    gram_operator,
    lanczos,
    largest_ritz,
    radau_bounds,
    rademacher_probes,
)
from linstab.operators import CallableOperator, DenseOperator

F32 = torch.float32


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread for this module (shared fixture in conftest)."""


def spread(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` singular values: a continuum on [0.05, 2], an exact plateau at 1 and values near it."""
    g = torch.Generator().manual_seed(seed)
    k = n // 4
    cont = 0.05 + 1.95 * torch.rand(n - 2 * k - 6, generator=g, dtype=F64)
    near = torch.tensor([0.985, 0.995, 1.005, 1.012, 0.989, 1.0101], dtype=F64)
    return torch.cat([cont, torch.ones(k, dtype=F64), near, torch.full((k,), 1.5, dtype=F64)])


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_full_reorth_gives_orthonormal_basis_and_tridiagonal(dtype):
    op, _, _ = planted(spread(60), 60, dtype=dtype)
    A = op.materialize(dtype=F64).T @ op.materialize(dtype=F64)
    Z = rademacher_probes(60, 3, dtype=dtype, seed=1)
    res = lanczos(op, Z, 12, reorth="full", return_basis=True)
    tol = 1e-12 if dtype == F64 else 2e-5
    assert res.alpha.shape == (3, 12) and res.beta.shape == (3, 12) and res.alpha.dtype == F64
    assert res.basis.shape == (12, 60, 3)
    for b in range(3):
        Q = res.basis[:, :, b].to(F64).T  # (60, 12)
        assert torch.allclose(Q.T @ Q, torch.eye(12, dtype=F64), atol=10 * tol)
        assert torch.allclose(Q.T @ A @ Q, res.tridiagonal(b), atol=100 * tol * float(A.norm()))
        assert torch.allclose(Q[:, 0] * res.start_norm[b], Z[:, b].to(F64), atol=tol)
    # batched runs equal runs one probe at a time
    for b in range(3):
        one = lanczos(op, Z[:, b : b + 1], 12, reorth="full")
        assert torch.allclose(one.alpha[0], res.alpha[b], atol=1e3 * tol)
        assert torch.allclose(one.beta[0], res.beta[b], atol=1e3 * tol)


@pytest.mark.parametrize("reorth", ["none", "full"])
def test_gauss_weights_are_squared_first_components(reorth):
    """The rule's moments equal ``z^T A^j z`` for ``j <= 2k - 1`` (PyHessian used wrong weights)."""
    op, _, _ = planted(spread(80, 1), 80)
    A = op.materialize().T @ op.materialize()
    Z = rademacher_probes(80, 4, dtype=F64, seed=2)
    k = 6
    res = lanczos(op, Z, k, reorth=reorth)
    nodes, w = gauss_quadrature(res)
    assert torch.allclose(w.sum(dim=1), torch.full((4,), 80.0, dtype=F64))
    for j in range(2 * k):
        exact = torch.einsum("ib,ib->b", Z, torch.linalg.matrix_power(A, j) @ Z)
        assert torch.allclose((w * nodes**j).sum(dim=1), exact, rtol=1e-9), j
    # the wrong weights (first components not squared, or last components) fail the check
    T = res.tridiagonal(0)
    x, V = torch.linalg.eigh(T)
    m2 = float(Z[:, 0] @ A @ A @ Z[:, 0])
    assert abs(float((80 * V[-1] ** 2 * x**2).sum()) - m2) > 1e-3 * m2
    assert abs(float((80 * V[0].abs() * x**2).sum()) - m2) > 1e-3 * m2


def test_breakdown_gives_exact_rule_and_collapsed_bounds():
    d = torch.tensor([0.5] * 10 + [1.0] * 20 + [2.0] * 5, dtype=F64)
    op = DenseOperator(torch.diag(d))
    Z = rademacher_probes(35, 2, dtype=F64, seed=0)
    res = lanczos(op, Z, 10)
    assert res.lengths.tolist() == [3, 3]
    nodes, w = gauss_quadrature(res)
    assert torch.allclose(nodes[:, :3], torch.tensor([[0.25, 1.0, 4.0]] * 2, dtype=F64), atol=1e-12)
    assert torch.allclose(w[:, :3], torch.tensor([[10.0, 20.0, 5.0]] * 2, dtype=F64), atol=1e-10)
    assert bool((w[:, 3:] == 0).all())
    for t, f in ((0.3, 10.0), (1.0, 30.0), (3.0, 30.0)):
        lo, hi = radau_bounds(res, t)
        assert torch.allclose(hi, torch.full((2,), f, dtype=F64), atol=1e-9)
        if t != 1.0:
            assert torch.allclose(lo, hi)
    lo, _ = radau_bounds(res, 1.0)  # F(1 - 0) = 10, F(1) = 30: an atom exactly at t
    assert torch.allclose(lo, torch.full((2,), 10.0, dtype=F64), atol=1e-9)


def test_zero_start_gives_empty_run():
    op, _, _ = planted(spread(40), 40)
    Z = rademacher_probes(40, 2, dtype=F64, seed=0)
    Z[:, 1] = 0
    res = lanczos(op, Z, 5)
    assert res.lengths.tolist() == [5, 0]
    assert float(res.start_norm[1]) == 0.0
    nodes, w = gauss_quadrature(res)
    assert bool((w[1] == 0).all())
    lo, hi = radau_bounds(res, 1.0)
    assert float(lo[1]) == float(hi[1]) == 0.0


@pytest.mark.parametrize(
    "reorth,dtype,k", [("none", F64, 10), ("full", F64, 25), ("none", F64, 60), ("none", F32, 20)]
)
def test_radau_bounds_bracket_the_exact_distribution(reorth, dtype, k):
    """``lo <= F_z(t - 0) <= F_z(t) <= hi`` for every probe and threshold (exact eigenpairs)."""
    op, _, _ = planted(spread(120, 3), 120, dtype=dtype)
    lam, V = gram_eig(op)
    Z = rademacher_probes(120, 6, dtype=dtype, seed=3)
    c2 = (V.T @ Z.to(F64)) ** 2  # (120, B): weights of the probes' spectral measures
    res = lanczos(op, Z, k, reorth=reorth)
    margin = 0.0 if dtype == F64 else 100 * torch.finfo(F32).eps * float(lam.max())
    widths = []
    for t in (1e-3, 0.3, 0.98**2, 0.99**2, 1.0, 1.01**2, 1.02**2, 2.0, 3.9):
        lo, _ = radau_bounds(res, t - margin)
        _, hi = radau_bounds(res, t + margin)
        F_minus = (c2 * (lam < t)[:, None]).sum(dim=0)
        F_plus = (c2 * (lam <= t)[:, None]).sum(dim=0)
        slack = (1e-8 if dtype == F64 else 1e-5) * 120
        assert bool((lo <= F_minus + slack).all()), (t, lo, F_minus)
        assert bool((F_plus <= hi + slack).all()), (t, hi, F_plus)
        widths.append(float((hi - lo).mean()))
    assert max(widths) < 120  # informative, not the trivial [0, |z|^2]


def test_largest_ritz_bounds_the_top_eigenvalue():
    s = spread(100, 4)
    op, _, _ = planted(s, 100)
    res = lanczos(op, rademacher_probes(100, 3, dtype=F64, seed=0), 15, reorth="full")
    theta, resid = largest_ritz(res)
    top = float(s.max()) ** 2
    assert bool((theta <= top + 1e-10).all())
    assert bool((theta + resid >= top - 1e-8).all())


def test_left_side_with_support_is_the_active_row_gram():
    op, mask, _ = planted(spread(50, 5), 80, 70, active=50)
    gram, dim = gram_operator(op, "left", mask)
    assert dim == 80
    J = op.materialize()
    X = torch.randn((3, 80), dtype=F64) * mask
    assert torch.allclose(gram(X), (J @ J.T @ X.T).T * mask, atol=1e-12)
    Z = rademacher_probes(80, 2, dtype=F64, support=mask, seed=0)
    assert bool((Z[~mask] == 0).all()) and bool((Z.pow(2).sum(0) == 50).all())
    res = lanczos(op, Z, 8, side="left", support=mask, reorth="full", return_basis=True)
    assert bool((res.basis[:, ~mask, :] == 0).all())
    assert res.n_support == 50


def test_selective_orthogonalization_against_top_singular_vectors():
    s = spread(90, 6)
    op, _, _ = planted(s, 90)
    top = S.spectrum(op, "topk", k=5, vectors=True)
    Z = rademacher_probes(90, 3, dtype=F64, seed=1)
    res = lanczos(op, Z, 20, reorth="full", locked=top.V, return_basis=True)
    Q = res.basis.permute(0, 2, 1).reshape(-1, 90)
    assert float((Q @ top.V).abs().max()) < 1e-10
    sel = lanczos(op, Z, 20, reorth="selective", locked=top.V)
    theta, _ = largest_ritz(sel)
    sixth = float(torch.sort(s, descending=True).values[5]) ** 2
    assert bool((theta <= sixth + 1e-8).all())  # the locked top values are gone


def test_no_host_copies_inside_the_iteration(monkeypatch):
    """Between the first and the last operator product no tensor value reaches the host."""
    op0, _, _ = planted(spread(40), 40)
    events: list[str] = []

    def mm(V):
        events.append("product")
        return op0._matmat(V)

    def rmm(W):
        events.append("product")
        return op0._rmatmat(W)

    op = CallableOperator(mm, rmm, (40,), (40,), F64)
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, _name=name, **kw):
            events.append(_name)
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    Z = torch.ones((40, 2), dtype=F64)
    for reorth in ("none", "full"):
        events.clear()
        lanczos(op, Z, 6, reorth=reorth)
        first = events.index("product")
        last = len(events) - 1 - events[::-1].index("product")
        assert set(events[first : last + 1]) == {"product"}, events[first : last + 1]


def test_input_errors():
    op, _, _ = planted(spread(40), 40)
    Z = rademacher_probes(40, 2, dtype=F64)
    with pytest.raises(TypeError, match="LinearOperator"):
        lanczos(torch.eye(3), Z, 3)
    with pytest.raises(ValueError, match="steps must be an int >= 1; got 0"):
        lanczos(op, Z, 0)
    with pytest.raises(TypeError, match="steps must be an int"):
        lanczos(op, Z, 2.5)
    with pytest.raises(TypeError, match="dtype"):
        lanczos(op, Z.float(), 3)
    with pytest.raises(ValueError, match=r"shape \(40, B\)"):
        lanczos(op, Z[:30], 3)
    with pytest.raises(ValueError, match="reorth"):
        lanczos(op, Z, 3, reorth="partial")
    with pytest.raises(ValueError, match="side"):
        lanczos(op, Z, 3, side="both")
    with pytest.raises(ValueError, match="needs locked"):
        lanczos(op, Z, 3, reorth="selective")
    with pytest.raises(ValueError, match="return_basis"):
        lanczos(op, Z, 3, return_basis=True)
    with pytest.raises(ValueError, match="support"):
        lanczos(op, Z, 3, support=torch.ones(39, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        lanczos(nan_operator(20), rademacher_probes(20, 2, dtype=F64), 3)


def test_an_operator_that_turns_nan_fails_at_the_first_check_point_not_after_all_steps():
    """NaN from the 20th product on: the run stops at the check after step 32, not after 400."""
    A = torch.randn(500, 500, generator=torch.Generator().manual_seed(0), dtype=F64)
    calls = []

    def mm(V):
        calls.append(1)
        return V @ A.T if len(calls) < 20 else torch.full_like(V, float("nan"))

    op = CallableOperator(mm, lambda W: W @ A, (500,), (500,), F64)
    with pytest.raises(ValueError, match="NaN.*within the first 32 steps"):
        lanczos(op, rademacher_probes(500, 2, dtype=F64), 400)
    assert len(calls) == 32


def test_many_steps_without_reorth_keep_the_moments():
    """Past loss of orthogonality (k > n), the rule still reproduces the low moments."""
    vals = levels({0.3: 20, 1.0: 20, 1.7: 20})
    g = torch.Generator().manual_seed(0)
    vals = vals + 0.05 * torch.rand(60, generator=g, dtype=F64)
    op, _, _ = planted(vals, 60)
    A = op.materialize().T @ op.materialize()
    Z = rademacher_probes(60, 2, dtype=F64, seed=4)
    res = lanczos(op, Z, 80)
    nodes, w = gauss_quadrature(res)
    for j in range(6):
        exact = torch.einsum("ib,ib->b", Z, torch.linalg.matrix_power(A, j) @ Z)
        assert torch.allclose((w * nodes**j).sum(dim=1), exact, rtol=1e-8)


@pytest.mark.parametrize("reorth", ["none", "full"])
def test_stop_rule_ends_at_a_check_point_with_the_same_coefficients(reorth):
    """``stop`` is asked at the check points with the steps so far; a run it ends equals the
    first steps of the full run (same coefficients, lengths, basis).
    """
    op, _, _ = planted(spread(60), 60)
    Z = rademacher_probes(60, 3, dtype=F64, seed=4)
    full = lanczos(op, Z, 20, reorth=reorth, return_basis=reorth == "full")
    asked = []

    def stop(part):
        asked.append(part.steps)
        assert part.alpha.shape == (3, part.steps) and part.basis is None
        return part.steps >= 8

    res = lanczos(op, Z, 20, reorth=reorth, return_basis=reorth == "full", stop=stop, check_at=[4, 8, 12])
    assert asked == [4, 8] and res.steps == 8
    assert torch.equal(res.alpha, full.alpha[:, :8]) and torch.equal(res.beta, full.beta[:, :8])
    assert torch.equal(res.start_norm, full.start_norm) and (res.lengths == 8).all()
    if reorth == "full":
        assert torch.equal(res.basis, full.basis[:8])
    # default check points double from 16; never at the last step
    asked.clear()
    lanczos(op, Z, 40, reorth=reorth, stop=lambda part: asked.append(part.steps) or False)
    assert asked == [16, 32]
    with pytest.raises(ValueError, match="check_at"):
        lanczos(op, Z, 5, stop=stop, check_at=[0, 2])
    with pytest.raises(TypeError, match="check_at"):
        lanczos(op, Z, 5, stop=stop, check_at=["a"])
