"""One sweep task = one (model, image): what a worker runs, and everything it needs by name.

A task is a plain JSON-able dict (no tensors, no modules): the model is named by a
:class:`ModelSpec` (a registry name, or a factory ``"module:function"`` with keyword arguments)
plus the SHA-256 the client saw, and the image by an :class:`ImageRef` (a default-image index,
a member of the JPEG test zip, a file, or an index into an array file). :func:`run_task` loads
both on the worker (models cached per worker process, checksum verified once), runs the
recipe's analyses and returns the task's rows (dicts with the columns of :data:`COLUMNS`).

Failures never escape :func:`run_task`: a failure of the whole task (model load, bad image, NaN
logits) gives one row with ``status="error"`` and the message; a failure of one analysis on one
unit (e.g. a top-k solver that does not converge) gives an error row for that unit only.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..analyses.attacks import ATTACKS, CONTROLS, check_attack_params
from ..analyses.attacks import check_seed as check_attack_seed
from ..analyses.perturbations import analyze, per_image_statistics, summarize
from ..analyses.propagation import parse_perturbations, resolve_units
from ..data.refs import ImageRef, ImageSource, load_image
from ..data.refs import ImageRefs as SweepImages
from ..data.refs import image_refs as parse_images
from ..io.hashing import sha256_file
from ..io.validate import check_int
from ..linalg.results import PLATEAU, ZERO_TOL, ConvergenceWarning
from ..linalg.results import check_seed as check_solver_seed
from ..models.registry import REGISTRY, is_model_file, trained_model_spec
from ..models.weights import resolve_weights
from ..network.factories import call_factory, is_factory_spec, load_factory
from ..network.loading import load_model
from ..spectra.bands import _check_bands_args, bands
from ..spectra.spectrum import spectrum

__all__ = [
    "ANALYSES",
    "COLUMNS",
    "ModelSpec",
    "ImageSource",
    "ImageRef",
    "SweepImages",
    "Recipe",
    "registry_model",
    "factory_model",
    "state_sha256",
    "parse_images",
    "load_image",
    "get_network",
    "run_task",
    "error_rows",
    "task_id",
]

ANALYSES: tuple[str, ...] = ("bands", "topk", "propagation")

# column -> type (``int``, ``float``, ``str``, ``bool``, ``list<float>``); every row has all of
# them (``None`` where not applicable), so every task file has the same Parquet schema
COLUMNS: dict[str, str] = {
    "task_id": "str",
    "model": "str",
    "model_sha256": "str",
    "image": "str",
    "image_index": "int",
    "image_source": "str",
    "lossy": "bool",
    "label": "int",
    "prediction": "int",
    "margin": "float",
    "analysis": "str",
    "perturbation": "str",
    "unit": "str",
    "stage": "int",
    "unit_index": "int",
    "kind": "str",
    "n": "int",
    "status": "str",
    "message": "str",
    # bands
    "above": "int",
    "plateau": "int",
    "below": "int",
    "zero": "int",
    "frac_above": "float",
    "frac_plateau": "float",
    "frac_below": "float",
    "frac_zero": "float",
    "exact_ones": "int",
    "band_route": "str",
    # top-k
    "topk": "list<float>",
    "topk_converged": "bool",
    "topk_max_residual": "float",
    # propagation (per unit) and the attack (per image and perturbation)
    "growth": "float",
    "norm": "float",
    "normalized": "float",
    "lin_rel_err": "float",
    "attack_flipped": "bool",
    "attack_eps": "float",
    "attack_l2": "float",
    "attack_linf": "float",
    "jump_ratio": "float",
    "last3_gain": "float",
    "seconds": "float",
}


# ============================================================================================
# models
# ============================================================================================
@dataclass(frozen=True)
class ModelSpec:
    """A model named so that any worker can rebuild it: never a pickled module.

    Exactly one of ``registry`` and ``factory`` is set.

    Attributes:
        name: the label in rows and the manifest.
        registry: a :data:`linstab.models.REGISTRY` name; the worker calls
            :func:`linstab.load_model` (weights found through ``LINSTAB_WEIGHTS_DIR``, the package
            or the cache) and checks the weights file's SHA-256 against ``sha256``.
        factory: ``"module:function"`` importable on the workers, called as
            ``function(**kwargs)`` and returning a :class:`linstab.Network` in eval mode
            (deterministic: seeded); ``sha256`` is then :func:`state_sha256` of the network,
            checked on the worker. For tests and custom models.
        kwargs: JSON-able keyword arguments of the factory.
        sha256: the expected checksum (see above).
    """

    name: str
    registry: str | None = None
    factory: str | None = None
    kwargs: dict = field(default_factory=dict)
    sha256: str = ""

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        """The spec back from :meth:`to_dict`."""
        return cls(
            name=d["name"],
            registry=d.get("registry"),
            factory=d.get("factory"),
            kwargs=dict(d.get("kwargs") or {}),
            sha256=d.get("sha256", ""),
        )

    def key(self) -> str:
        """A canonical string identifying the model."""
        return json.dumps(self.to_dict(), sort_keys=True)


def state_sha256(net) -> str:
    """SHA-256 over a network's state dict (:meth:`linstab.Network.state_sha256`)."""
    return net.state_sha256()


def registry_model(name: str, *, resolve: bool = True) -> ModelSpec:
    """The spec of a registered model, with the SHA-256 the workers must find.

    Args:
        name: a registry name, the path of a ``.safetensors`` model written by ``linstab
            train`` (the workers load that path: it must be reachable there), or a model factory
            ``"module:function"`` called without arguments (as :func:`linstab.load_model` does;
            the spec is :func:`factory_model` under the network's name).
        resolve: also find the weights here (and checksum them when the registry only has a
            SHA-1); with ``False`` a registry entry without SHA-256 is an error.

    Raises:
        ValueError: for an unknown name (the message lists the registered ones) or a factory
            that cannot be imported or raises.
        TypeError: a factory that returns anything but a :class:`linstab.Network`.
        FileNotFoundError: when ``resolve`` and the weights are not found here.
    """
    if is_factory_spec(name):  # built here once for its name and checksum, rebuilt on the workers
        net = load_factory(name)
        return ModelSpec(name=net.name, factory=name, sha256=state_sha256(net))
    if is_model_file(name):  # a model trained by `linstab train`: workers load the same file
        spec = trained_model_spec(name)
        path = Path(name).expanduser().resolve()
        return ModelSpec(name=spec.name, registry=str(path), sha256=spec.sha256)
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    sha = spec.sha256
    if resolve:
        path = resolve_weights(spec, download=False)
        sha = sha or sha256_file(path)
    if not sha:
        raise ValueError(
            f"model {name!r} has no SHA-256 in the registry: its weights must be found on this "
            "machine to checksum them"
        )
    return ModelSpec(name=name, registry=name, sha256=sha)


def factory_model(name: str, factory: str, **kwargs) -> ModelSpec:
    """The spec of a model built by ``factory(**kwargs)`` (called here once to checksum it).

    ``kwargs`` must survive a JSON round trip (they travel in the task and the manifest).
    """
    try:
        kw = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"factory kwargs of {name!r} must be JSON-able: {exc}") from exc
    if kw != kwargs:
        raise ValueError(f"factory kwargs of {name!r} change in a JSON round trip: {kwargs!r}")
    net = call_factory(factory, kw)
    return ModelSpec(name=name, factory=factory, kwargs=kw, sha256=state_sha256(net))


_NETWORKS: dict[str, object] = {}


def get_network(spec: ModelSpec | dict, *, cache: bool = True):
    """Build (or reuse, per process) the network of a spec and verify its checksum.

    Raises:
        ValueError: when the weights' SHA-256 (registry) or the state's SHA-256 (factory)
            differs from ``spec.sha256``.
    """
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    key = spec.key()
    if cache and key in _NETWORKS:
        return _NETWORKS[key]
    if (spec.registry is None) == (spec.factory is None):
        raise ValueError(f"model spec {spec.name!r} needs exactly one of registry and factory")
    if spec.registry is not None:
        net = load_model(spec.registry)
        got, what = net.sha256, "weights file"
    else:
        net = call_factory(spec.factory, dict(spec.kwargs))
        got, what = state_sha256(net), "state dict"
    if spec.sha256 and got != spec.sha256:
        raise ValueError(
            f"model {spec.name!r}: SHA-256 of the {what} on this worker is {got}, the sweep "
            f"expects {spec.sha256} (different weights on this machine?)"
        )
    if cache:
        if len(_NETWORKS) >= 4:
            _NETWORKS.pop(next(iter(_NETWORKS)))
        _NETWORKS[key] = net
    return net


# ============================================================================================
# recipe
# ============================================================================================
@dataclass(frozen=True)
class Recipe:
    """What is computed per (model, image); with the models and the image source it is the
    sweep's recipe (a directory holds results of one recipe only).

    Attributes:
        analyses: among :data:`ANALYSES`: ``"bands"`` (exact band counts, Figure 2),
            ``"topk"`` (the ``k`` largest singular values) and ``"propagation"`` (growth of
            adversarial and random perturbations per unit, attack radius, jump ratio); kept in
            the order of :data:`ANALYSES` without repeats, whatever the order given.
        attacks: perturbations of ``"propagation"`` (:data:`linstab.perturbations.PERTURBATIONS`).
        units: unit spec (:func:`linstab.perturbations.resolve_units`: ``all``, ``last``, a stage,
            addresses ``3.7``, comma lists).
        k: singular values per unit for ``"topk"`` (capped at the unit's size).
        thresholds: ``(lo, hi)`` of the plateau band.
        zero_tol: singular values at or below it count as zero.
        dtype: ``"float64"`` or ``"float32"``: linearization, propagation and logits.
        seed: seed of the random perturbations, PGD and the top-k start block; an int in the
            range those accept (checked here, not in every task).
        attack_params: per-attack keyword arguments (``{"pgd": {"steps": 10}}``), checked here
            with :func:`linstab.analyses.attacks.check_attack_params` (before any directory or
            task exists).
        exact_ones: ``"bands"``: also count the values exactly ``|alpha|`` of units whose ``Q``
            is rank deficient, which takes their whole spectrum (tens of seconds to minutes on
            a 16,384-value unit, and uneven across images); ``False`` (default): ``exact_ones``
            is empty for those units (it comes for free on the others; the counts are the same).
    """

    analyses: tuple[str, ...] = ("bands",)
    attacks: tuple[str, ...] = ("fgsm", "random")
    units: str = "all"
    k: int = 16
    thresholds: tuple[float, float] = PLATEAU
    zero_tol: float = ZERO_TOL
    dtype: str = "float64"
    seed: int = 0
    attack_params: dict = field(default_factory=dict)
    exact_ones: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.exact_ones, bool):
            raise TypeError(f"exact_ones must be a bool, got {self.exact_ones!r}")

        analyses = [self.analyses] if isinstance(self.analyses, str) else list(self.analyses)
        analyses = [a.strip() for a in analyses for a in a.split(",") if a.strip()]
        bad = [a for a in analyses if a not in ANALYSES]
        if bad:
            raise ValueError(f"unknown analysis {bad[0]!r}; expected among {', '.join(ANALYSES)}")
        if not analyses:
            raise ValueError(f"no analysis given; expected among {', '.join(ANALYSES)}")
        object.__setattr__(self, "analyses", tuple(a for a in ANALYSES if a in analyses))
        attacks = tuple(parse_perturbations(self.attacks)) if "propagation" in analyses else ()
        object.__setattr__(self, "attacks", attacks)
        check_int("k", self.k)
        self._check_seed(analyses)
        lo, hi, zt = _check_bands_args(self.thresholds, self.zero_tol)
        object.__setattr__(self, "thresholds", (lo, hi))
        object.__setattr__(self, "zero_tol", zt)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.units, str) or not self.units.strip():
            raise ValueError(
                f"units must be a spec such as 'all', 'last', '3' or '1.1,3.9', got {self.units!r}"
            )

        object.__setattr__(self, "attack_params", _check_attack_params(self.attack_params))

    def _check_seed(self, analyses: list[str]) -> None:
        """The seed as the analyses that use it check it, here rather than in every task."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__} {self.seed!r}")
        if "propagation" in analyses:
            check_attack_seed("seed", self.seed)
        if "topk" in analyses:
            check_solver_seed(self.seed)
        object.__setattr__(self, "seed", int(self.seed))

    def to_dict(self) -> dict:
        """The recipe as a JSON-able dict.

        A sweep directory is checked against it in the order-free form of
        :func:`linstab.sweep.store.canonical_recipe`.
        """
        d = asdict(self)
        d["analyses"] = list(self.analyses)
        d["attacks"] = list(self.attacks)
        d["thresholds"] = list(self.thresholds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """The recipe back from :meth:`to_dict`."""
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("analyses", "attacks", "thresholds"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def _check_attack_params(params) -> dict:
    """``attack_params`` checked as the attacks check them, as a JSON-able dict.

    Raises:
        TypeError: not a dict of dicts, or a parameter an attack does not take.
        ValueError: an unknown attack, a value out of range, or something not JSON-able.
    """
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError(
            f'attack_params: expected a dict of per-attack parameters such as {{"pgd": {{"steps": 10}}}}, '
            f"got {type(params).__name__}"
        )
    known = (*ATTACKS, *CONTROLS)
    unknown = sorted(str(k) for k in params if k not in known)
    if unknown:
        raise ValueError(f"attack_params: unknown attacks {unknown}; expected among {', '.join(known)}")
    try:
        ap = json.loads(json.dumps(params))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attack_params: expected JSON-able values (kept in the manifest): {exc}") from None
    for name, kw in ap.items():
        if not isinstance(kw, dict):
            raise TypeError(
                f"attack_params[{name!r}]: expected a dict of keyword arguments, "
                f"got {type(kw).__name__} {kw!r}"
            )
        try:
            check_attack_params(name, kw)
        except TypeError as exc:
            raise TypeError(f"attack_params: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"attack_params: {name}: {exc}") from None
    return ap


# ============================================================================================
# the task
# ============================================================================================
def task_id(model: str, image_id: str) -> str:
    """``"<model>/<image id>"``."""
    return f"{model}/{image_id}"


def _blank() -> dict:
    return dict.fromkeys(COLUMNS)


def _base(task: dict) -> dict:
    ref = task["image"]
    row = _blank()
    row.update(
        task_id=task["task_id"],
        model=task["model"]["name"],
        model_sha256=task["model"]["sha256"],
        image=ref["id"],
        image_index=int(ref["index"]),
        image_source=ref["source"],
        lossy=bool(ref["lossy"]),
        label=ref["label"],
    )
    return row


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def error_rows(task: dict, exc: BaseException | str, seconds: float | None = None) -> list[dict]:
    """The one row recording a failed task (``analysis="task"``, ``status="error"``)."""
    row = _base(task)
    row.update(
        analysis="task",
        status="error",
        message=exc if isinstance(exc, str) else _message(exc),
        seconds=seconds,
    )
    return [row]


class _threads:  # noqa: N801 - used like a function
    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
        return False


def run_task(task: dict) -> list[dict]:
    """Run one (model, image) task and return its rows; never raises (errors become rows).

    Args:
        task: ``{"task_id", "model": ModelSpec dict, "image": ImageRef dict, "recipe": Recipe
            dict, "threads": torch threads (optional, default 1)}``.
    """
    t0 = time.perf_counter()
    try:
        with _threads(task.get("threads", 1)):
            return _run(task)
    except Exception as exc:  # noqa: BLE001 - recorded as an error row, never lost
        return error_rows(task, exc, time.perf_counter() - t0)


def _unit_row(base: dict, u, analysis: str) -> dict:
    row = dict(base)
    row.update(
        analysis=analysis,
        unit=u.address,
        stage=u.stage,
        unit_index=u.index,
        kind=u.kind,
        n=min(u.n_in, u.n_out),
        status="ok",
    )
    return row


def _run(task: dict) -> list[dict]:

    recipe = Recipe.from_dict(task["recipe"])
    dtype = torch.float64 if recipe.dtype == "float64" else torch.float32
    net = get_network(task["model"])
    x, label = load_image(task["image"])
    base = _base(task)
    lin = net.linearize(x, dtype=dtype)
    logits = lin.logits[0].detach().to(torch.float64).cpu()
    if not torch.isfinite(logits).all():
        raise FloatingPointError(f"non-finite logits at image {task['image']['id']}")
    pred = int(logits.argmax())
    ref = pred if label is None else int(label)
    others = torch.cat([logits[:ref], logits[ref + 1 :]])
    base.update(prediction=pred, margin=float(logits[ref] - others.max()))
    addresses = set(resolve_units(net, recipe.units))
    units = [u for u in net.units if u.address in addresses]
    rows: list[dict] = []
    for analysis in recipe.analyses:
        if analysis == "bands":
            rows += _bands_rows(lin, units, base, recipe)
        elif analysis == "topk":
            rows += _topk_rows(lin, units, base, recipe)
        elif analysis == "propagation":
            rows += _propagation_rows(net, x, label, units, base, recipe, task["image"]["id"], dtype)
    return rows


def _bands_rows(lin, units, base: dict, recipe: Recipe) -> list[dict]:

    out = []
    for u in units:
        row = _unit_row(base, u, "bands")
        t = time.perf_counter()
        try:
            bc = bands(
                lin.unit(u.stage, u.index), recipe.thresholds, recipe.zero_tol, exact_ones=recipe.exact_ones
            )
            fr = bc.fractions
            row.update(
                above=bc.above,
                plateau=bc.plateau,
                below=bc.below,
                zero=bc.zero,
                frac_above=fr["above"],
                frac_plateau=fr["plateau"],
                frac_below=fr["below"],
                frac_zero=fr["zero"],
                exact_ones=bc.n_exact_ones,
                band_route=bc.route,
            )
            if min(bc.above, bc.plateau, bc.below, bc.zero) < 0:
                raise ArithmeticError(f"negative band count {bc.counts} (inertia failed)")
        except Exception as exc:  # noqa: BLE001
            row = _unit_row(base, u, "bands")
            row.update(status="error", message=_message(exc))
        row["seconds"] = time.perf_counter() - t
        out.append(row)
    return out


def _topk_rows(lin, units, base: dict, recipe: Recipe) -> list[dict]:

    out = []
    for u in units:
        row = _unit_row(base, u, "topk")
        t = time.perf_counter()
        try:
            op = lin.unit(u.stage, u.index)
            k = min(recipe.k, min(op.shape))
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConvergenceWarning)
                res = spectrum(op, "topk", k=k, seed=recipe.seed)
            vals = res.values.detach().to(torch.float64).cpu()
            if not torch.isfinite(vals).all():
                raise FloatingPointError(f"non-finite singular values {vals.tolist()}")
            has_res = res.residuals is not None and res.residuals.numel() > 0
            row.update(
                topk=[float(v) for v in vals],
                topk_converged=bool(res.converged),
                topk_max_residual=float(res.residuals.max()) if has_res else None,
            )
        except Exception as exc:  # noqa: BLE001 - non-convergence, NaN, ...
            row = _unit_row(base, u, "topk")
            row.update(status="error", message=_message(exc))
        row["seconds"] = time.perf_counter() - t
        out.append(row)
    return out


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _propagation_rows(net, x, label, units, base, recipe: Recipe, image_id: str, dtype) -> list[dict]:

    t = time.perf_counter()
    labels = None if label is None else torch.tensor([int(label)])
    an = analyze(
        net,
        x[None],
        labels,
        list(recipe.attacks),
        ids=[image_id],
        dtype=dtype,
        k=None,
        spectral_units=None,
        seed=recipe.seed,
        attack_params=recipe.attack_params,
        progress=False,
    )
    seconds = time.perf_counter() - t
    out = []
    for name in recipe.attacks:
        res = an.attacks[name][0]
        att = {
            "perturbation": name,
            # null when the image was not perturbed (misclassified, or no reference norm): no outcome
            "attack_flipped": None if res.skipped else bool(res.flipped),
            "attack_eps": _finite(res.eps) if res.success else None,
            "attack_l2": float(res.l2) if res.success else None,
            "attack_linf": float(res.linf) if res.success else None,
        }
        prow = [r for r in an.rows if r["perturbation"] == name]
        if not res.success or not prow:
            row = dict(base)
            row.update(
                att,
                analysis="propagation",
                status="skipped",
                message=res.note or "the perturbation did not flip the label",
                seconds=seconds,
            )
            out.append(row)
            continue
        s = summarize(prow)[0]
        # the report's jump: last 3 units of the last stage over its regular units before them
        # (the down-sampling unit's raw-norm ratio is partly a dimension effect)
        jump = per_image_statistics(prow)[0]["jump"]
        att.update(
            jump_ratio=_finite(math.exp(jump)) if math.isfinite(jump) else None,
            last3_gain=_finite(s.get("last3_gain")),
        )
        by_addr = {r["address"]: r for r in prow}
        for u in units:
            r = by_addr[u.address]
            row = _unit_row(base, u, "propagation")
            row.update(
                att,
                growth=_finite(r["growth"]),
                norm=_finite(r["norm"]),
                normalized=_finite(r["normalized"]),
                lin_rel_err=_finite(r.get("lin_rel_err")),
                seconds=seconds / max(len(units), 1),
            )
            out.append(row)
    return out


def describe_worker() -> dict:
    """Host and process of the current worker (for logs)."""
    import platform

    return {"host": platform.node(), "pid": os.getpid(), "torch_threads": torch.get_num_threads()}
