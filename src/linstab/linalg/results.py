"""Result objects of the spectral solvers (:class:`SpectrumResult`, :class:`BandCounts`), their
warning and the shared argument checks.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io.jsonable import dtype_name, to_jsonable
from ..io.validate import is_real
from ..operators.base import LinearOperator

METHODS = ("exact", "topk", "bottomk")


SOLVERS = ("auto", "block-krylov", "arpack", "propack", "lobpcg")


ROUTES = ("auto", "structured", "gram", "dense")


EXACT_ROUTES = ("structured", "gram", "dense-gram", "dense-svd")
"""The routes of exact (direct) results; every other route is an iterative solver's."""


EXACT_MAX = 16384
"""The largest operator (``min(n_out, n_in)`` singular values) whose exact spectrum linstab
computes without being asked: the default of the report's ``--exact-max`` (larger units get
estimates) and the limit up to which ``spectrum(..., "topk"|"bottomk", solver="auto")`` takes an
exact route when that is the better choice (``docs/spectra.md``)."""


_DTYPES = (torch.float32, torch.float64)


BANDS = ("above", "plateau", "below", "zero")  # the paper's bands, in this order
PLATEAU = (0.99, 1.01)  # the paper's plateau band (lo, hi): singular values within 1% of 1
ZERO_TOL = 1e-6  # singular values at or below it count as zero


class ConvergenceWarning(RuntimeWarning):
    """An iterative singular-value solver stopped before meeting its tolerance."""


@dataclass
class SpectrumResult:
    """Singular values (and optionally vectors) of an operator ``J`` (``n_out x n_in``).

    Attributes:
        values: singular values, descending, ``(k,)`` (``k = min(n_out, n_in)`` for ``"exact"``).
        U: left singular vectors as columns ``(n_out, k)``, or ``None``. The block Krylov
            solver returns a zero column for a value it finds at rounding level of zero
            (below ``sqrt(eps) s_max``): ``J^T u = 0`` there needs a left null vector it does
            not compute; the other columns are orthonormal.
        V: right singular vectors as columns ``(n_in, k)``, or ``None``.
        method: the requested method, ``"exact"``, ``"topk"`` or ``"bottomk"``.
        route: how it was computed: ``"structured"``, ``"gram"``, ``"dense-gram"``,
            ``"dense-svd"``, ``"block-krylov"``, ``"arpack"``, ``"propack"`` or ``"lobpcg"``.
        dtype: dtype of ``values`` (and of the dense linear algebra).
        converged: ``True`` for direct methods; for iterative ones whether every requested
            triplet met the tolerance.
        iterations: restarts (block Krylov) or 0 (direct methods; SciPy does not report them).
        residuals: ``sqrt(|J v - s u|^2 + |J^T u - s v|^2)`` per triplet, ``(k,)``, or ``None``.
        timings: seconds per phase (``"total"`` always present).
        n_exact_ones: number of singular values that equal ``|alpha|`` exactly by the unit's
            structure (``alpha = 1`` for standard units: the plateau); ``None`` when the route
            does not expose the structure.
        n_zero_structural: number of singular values that are 0 because outputs are inactive
            (outer ReLU mask); ``None`` when unknown.
        alpha: the skip-connection scale of a structured unit (the plateau value), else ``None``.
        shape: ``(n_out, n_in)`` of the operator.
        tol: residual tolerance of an iterative method (relative to the largest value).
        info: further details (sizes of the reduction, product counts, warnings).
    """

    values: torch.Tensor
    U: torch.Tensor | None = None
    V: torch.Tensor | None = None
    method: str = "exact"
    route: str = ""
    dtype: torch.dtype = torch.float64
    converged: bool = True
    iterations: int = 0
    residuals: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    n_exact_ones: int | None = None
    n_zero_structural: int | None = None
    alpha: float | None = None
    shape: tuple[int, int] = (0, 0)
    tol: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of singular values held."""
        return int(self.values.numel())

    def metadata(self) -> dict:
        """Everything but the arrays, JSON-serializable."""
        return {
            "method": self.method,
            "route": self.route,
            "dtype": dtype_name(self.dtype),
            "converged": bool(self.converged),
            "iterations": int(self.iterations),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "n_exact_ones": self.n_exact_ones,
            "n_zero_structural": self.n_zero_structural,
            "alpha": self.alpha,
            "shape": list(self.shape),
            "tol": self.tol,
            "k": self.k,
            "info": to_jsonable(self.info),
        }

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``.npz`` with arrays ``singular_values`` (and ``u``, ``v``, ``residuals`` when
        present) and ``metadata`` (a JSON string; ``extra`` is merged into it).

        Returns:
            the written path (``.npz`` appended when missing).
        """
        path = Path(path)
        if path.suffix.lower() != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        if extra:
            meta.update(to_jsonable(extra))
        arrays = {"singular_values": self.values.detach().cpu().numpy()}
        if self.U is not None:
            arrays["u"] = self.U.detach().cpu().numpy()
        if self.V is not None:
            arrays["v"] = self.V.detach().cpu().numpy()
        if self.residuals is not None:
            arrays["residuals"] = self.residuals.detach().cpu().numpy()
        arrays["metadata"] = np.array(json.dumps(meta))
        with open(path, "wb") as f:  # a file object: NumPy would append ".npz" to "x.NPZ"
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpectrumResult:
        """Read a file written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["metadata"]))
            values = torch.from_numpy(z["singular_values"].copy())
            U = torch.from_numpy(z["u"].copy()) if "u" in z else None
            V = torch.from_numpy(z["v"].copy()) if "v" in z else None
            res = torch.from_numpy(z["residuals"].copy()) if "residuals" in z else None
        return cls(
            values=values,
            U=U,
            V=V,
            method=meta.get("method", "exact"),
            route=meta.get("route", ""),
            dtype=values.dtype,
            converged=bool(meta.get("converged", True)),
            iterations=int(meta.get("iterations", 0)),
            residuals=res,
            timings=dict(meta.get("timings", {})),
            n_exact_ones=meta.get("n_exact_ones"),
            n_zero_structural=meta.get("n_zero_structural"),
            alpha=meta.get("alpha"),
            shape=tuple(meta.get("shape", (0, 0))),
            tol=meta.get("tol"),
            info={k: v for k, v in meta.items() if k not in _META_KEYS} | dict(meta.get("info", {})),
        )

    def __repr__(self) -> str:
        head = ", ".join(f"{float(v):.4g}" for v in self.values[:3])
        return (
            f"SpectrumResult(k={self.k}, shape={self.shape}, method={self.method!r}, "
            f"route={self.route!r}, values=[{head}{', ...' if self.k > 3 else ''}], "
            f"converged={self.converged}, n_exact_ones={self.n_exact_ones})"
        )


_META_KEYS = {
    "method",
    "route",
    "dtype",
    "converged",
    "iterations",
    "timings",
    "n_exact_ones",
    "n_zero_structural",
    "alpha",
    "shape",
    "tol",
    "k",
    "info",
}


@dataclass
class BandCounts:
    """Counts of singular values in the paper's bands (Figure 2).

    With thresholds ``(lo, hi)`` and ``zero_tol``: ``above`` counts ``s > hi``, ``plateau``
    ``lo <= s <= hi``, ``below`` ``zero_tol < s < lo`` and ``zero`` ``s <= zero_tol``; they sum
    to ``n = min(n_out, n_in)``.

    Attributes:
        n: number of singular values.
        thresholds: ``(lo, hi)``.
        zero_tol: values at or below it count as zero.
        above, plateau, below, zero: the counts.
        n_exact_ones: singular values exactly equal to ``|alpha|`` by structure (``None`` when
            the route does not expose it); they are part of ``plateau`` when ``lo <= |alpha| <= hi``.
        alpha: the plateau value of a structured unit, else ``None``.
        route: ``"inertia-structured"``, ``"inertia-gram"`` or ``"spectrum-<route>"``.
        timings: seconds per phase.
    """

    n: int
    thresholds: tuple[float, float]
    zero_tol: float
    above: int
    plateau: int
    below: int
    zero: int
    n_exact_ones: int | None = None
    alpha: float | None = None
    route: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """The four counts by band name."""
        return {"above": self.above, "plateau": self.plateau, "below": self.below, "zero": self.zero}

    @property
    def fractions(self) -> dict[str, float]:
        """The counts divided by ``n`` (and the exact-ones fraction when known)."""
        n = max(self.n, 1)
        out = {k: v / n for k, v in self.counts.items()}
        if self.n_exact_ones is not None:
            out["exact_ones"] = self.n_exact_ones / n
        return out

    def to_dict(self) -> dict:
        """The counts, fractions, route and timings as a JSON-able dict."""
        d = {
            "n": self.n,
            "thresholds": list(self.thresholds),
            "zero_tol": self.zero_tol,
            **self.counts,
            "n_exact_ones": self.n_exact_ones,
            "alpha": self.alpha,
            "route": self.route,
            "timings": dict(self.timings),
        }
        d["fractions"] = self.fractions
        return d


def check_op(op) -> None:
    """Raise TypeError unless ``op`` is a linstab :class:`~linstab.operators.LinearOperator`."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"expected a linstab LinearOperator (e.g. lin.unit(1, 5)), got {type(op).__name__}")


def check_dtype(dtype) -> None:
    """Raise ValueError unless ``dtype`` is ``None``, float32 or float64."""
    if dtype is not None and dtype not in _DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64 (or None), got {dtype!r}")


def check_k(k, n: int, method: str) -> int:
    """``k`` checked against ``n`` values for ``method``; returns it as an int."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be a positive int for method={method!r}, got {type(k).__name__} {k!r}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (= min(n_out, n_in)) for method={method!r}, got {k}")
    return k


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise ValueError if ``x`` (a product of an operator) holds NaN or Inf.

    Args:
        x: the tensor to check.
        what: where it came from, for the message (e.g. ``"block-krylov products"``).
    """
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"the operator returned non-finite values (NaN or Inf; {bad} of {x.numel()} entries) in "
            f"{what}: check the operator (e.g. the linearization point or its weights); no spectrum "
            "of it is computed"
        )


def check_tol(tol) -> float:
    """``tol`` as a float after checking it is a finite real number ``> 0`` (not a bool)."""
    if not is_real(tol):
        raise TypeError(f"tol must be a positive finite number, got {type(tol).__name__} {tol!r}")
    tol = float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    return tol


SEED_RANGE = (-(2**63), 2**64)
"""Seeds the block Krylov solver's torch generator accepts (``lo <= seed < hi``)."""


SCIPY_SEED_RANGE = (0, 2**32)
"""Seeds SciPy's ``svds`` accepts (``lo <= seed < hi``)."""


def check_seed(seed, bounds: tuple[int, int] = SEED_RANGE, what: str = "") -> int:
    """``seed`` as an int after checking it is a Python or NumPy integer (not a bool) in
    ``bounds`` (``lo <= seed < hi``); ``what`` names the solver in the message.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    lo, hi = bounds
    if not lo <= seed < hi:
        raise ValueError(f"seed must be in [{lo}, {hi}){what}, got {seed}")
    return seed
