"""The network view: stem, stages of residual units, head; unit discovery and addresses."""

from __future__ import annotations

import hashlib
import numbers
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import is_lazy

from .. import models as _models
from ..data.images import check_images
from ..io.validate import check_int
from ..models.adapters import is_residual_unit, to_residual_unit
from ..models.device import resolve_device
from ..models.state import cast_state, kept_tensor_attributes
from ..operators.closed_form import UnitJacobian
from .linearization import JACOBIAN_METHODS, Linearization


@dataclass
class UnitInfo:
    """One residual unit of a network.

    Attributes:
        stage: 1-based stage number.
        index: 1-based unit number within the stage.
        name: module path in the model.
        module: the unit module (the user's, never modified).
        canonical: a :class:`~linstab.models.ResidualUnit` reproducing it (``None`` if its form
            is not recognized: then only the autodiff Jacobian is available).
        kind: ``"regular"`` (same shape, identity shortcut; also an unrecognized unit of unchanged
            shape, whose ``shortcut`` is ``"unknown"``), ``"downsampling"`` (spatial size shrinks)
            or ``"projection"`` (channels changed, or a shortcut map such as a 1x1 conv at the same
            shape).
        shortcut: ``"identity"``, ``"subsample-pad"``, ``"conv-bn"`` or ``"unknown"``.
        in_shape: input map shape ``(C, H, W)``.
        out_shape: output map shape.
    """

    stage: int
    index: int
    name: str
    module: nn.Module = field(repr=False)
    canonical: nn.Module | None = field(repr=False)
    kind: str
    shortcut: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def address(self) -> str:
        """``"stage.unit"``, e.g. ``"1.5"``."""
        return f"{self.stage}.{self.index}"

    @property
    def n_in(self) -> int:
        """Input dimension ``prod(in_shape)``."""
        return int(torch.Size(self.in_shape).numel())

    @property
    def n_out(self) -> int:
        """Output dimension ``prod(out_shape)``."""
        return int(torch.Size(self.out_shape).numel())


def parse_unit(text: str) -> tuple[int, int]:
    """Parse ``"S.K"`` into ``(S, K)``.

    Raises:
        ValueError: for anything but two positive integers separated by a dot.
    """
    parts = str(text).split(".")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"unit address must be 'STAGE.UNIT' with 1-based integers, got {text!r}")
    return int(parts[0]), int(parts[1])


def _plain(v) -> bool:
    """A module attribute whose ``repr`` is its value: a scalar, a string, or a tuple of them."""
    scalars = (bool, int, float, str, type(None))
    return isinstance(v, scalars) or (isinstance(v, tuple) and all(isinstance(e, scalars) for e in v))


def _code_digest(code, h) -> None:
    """Feed a code object's bytecode, names and constants (nested code objects recursively,
    never their addresses) into the hash ``h``.
    """
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            _code_digest(c, h)
        else:
            h.update(repr(c).encode())


def _check_eval(model: nn.Module) -> None:
    training = [n or "<model>" for n, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            "the model is in training mode (e.g. "
            f"{', '.join(training[:3])}): a module may compute differently in training mode "
            "(batch norm uses the batch's statistics, coupling images; dropout is random), so "
            "linstab analyses models in eval mode only. Call model.eval() before passing it to "
            "linstab (linstab never changes your model's mode)."
        )
    batch_stats = [
        n or "<model>"
        for n, m in model.named_modules()
        if isinstance(m, _BatchNorm) and (m.running_mean is None or m.running_var is None)
    ]
    if batch_stats:
        raise ValueError(
            f"batch norm without running statistics ({', '.join(batch_stats[:3])}; "
            "track_running_stats=False) normalizes with the statistics of the batch even in eval mode: "
            "an image's output would depend on the other images of its batch, and its Jacobian would be "
            "that of a batch of one. Give the layers running statistics, or use a per-image "
            "normalization (nn.InstanceNorm2d, nn.GroupNorm)"
        )


# exactly these classes (no subclass with its own forward) compute, as a twin's modules, what the
# closed form computes from their weights and settings
_TWIN_LAYERS = (
    _models.ResidualUnit,
    _models.ConvBlock,
    _models.SubsamplePad,
    nn.Sequential,
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.Identity,
    nn.ReLU,
)

_TWIN_ERRORS = (NotImplementedError, RuntimeError, AttributeError, TypeError, ValueError)


def _twin_is_closed_form(canon: nn.Module) -> bool:
    """Whether running the twin as a module computes its closed form (to round-off): it holds only
    plain layers of :data:`_TWIN_LAYERS`, without hooks, and no global module hook is set. A hook
    on a layer copied from the user's, or a layer subclass with its own forward (weight
    standardization), would run in the twin's forward pass and be skipped by the closed form.
    """
    glob = nn.modules.module
    if any(getattr(glob, h, True) for h in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return False
    return all(
        type(mod) in _TWIN_LAYERS and not (mod._forward_hooks or mod._forward_pre_hooks)
        for mod in canon.modules()
    )


def _reproduces(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """``out`` has ``ref``'s shape and agrees with it to ``1e-5`` of its size (at least 1)."""
    ref = ref.double()
    if out.shape != ref.shape:
        return False
    scale = max(1.0, float(ref.abs().max()))
    return float((out - ref).abs().max()) <= 1e-5 * scale


def _closed_form_twin(m: nn.Module, xi: torch.Tensor, yi: torch.Tensor) -> tuple[nn.Module | None, str]:
    """The unit's :class:`~linstab.models.ResidualUnit` twin for the closed-form Jacobian and
    its shortcut kind. The twin is ``None`` (autodiff only) when the form is not recognized,
    the twin or its closed form does not reproduce the module's output at ``xi`` (in float64:
    hooks on its layers, layer subclasses with their own forward), or a layer has no closed form
    (GroupNorm, batch norm without running statistics, ...); the shortcut kind is ``"unknown"``
    unless a twin reproduced the module.

    The closed form is checked first; the twin's own forward pass (in float64) runs only where
    it could differ from the closed form (:func:`_twin_is_closed_form`) or the closed form
    missed (to tell whether the shortcut kind is still known).
    """
    in_shape, out_shape = tuple(xi.shape[1:]), tuple(yi.shape[1:])
    try:
        canon = to_residual_unit(m, in_shape, out_shape)
    except _TWIN_ERRORS:  # e.g. a parameter-free shortcut that fails on a probe input
        return None, "unknown"
    if canon is None:
        return None, "unknown"
    with torch.no_grad():
        # compared in float64 (the twin's state cast, as the closed form casts it): a twin of
        # a float16/bfloat16 model run in its own dtype would miss the float32 trace's output;
        # the float32 trace's round-off grows with the activations' size (deep units).
        # The closed form reads the layers' weights and skips their forward passes (and their
        # hooks): it must reproduce the module too, or a forward hook on a conv, a pre-hook,
        # or a Conv2d/BatchNorm2d subclass with its own forward (weight standardization)
        # would be linearized as the plain layer
        try:
            closed = _reproduces(UnitJacobian(canon, xi, torch.float64).output, yi[0])
        except _TWIN_ERRORS:
            # e.g. a pre-activation block with conv1/bn1/conv2/bn2 names whose bn1 has the
            # input's channels, or a norm layer the closed form does not cover
            closed = False
        if closed and (canon is m or _twin_is_closed_form(canon)):
            return canon, canon.shortcut_kind
        if canon is not m:
            try:
                twin = torch.func.functional_call(canon, cast_state(canon, torch.float64), (xi.double(),))
                if not _reproduces(twin, yi):
                    return None, "unknown"
            except _TWIN_ERRORS:
                return None, "unknown"
    return (canon if closed else None), canon.shortcut_kind


def _is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` is the wrapper ``torch.compile`` returns (without importing dynamo)."""
    inner = getattr(model, "_orig_mod", None)
    return type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module)


def _check_normalization(mean, std, channels: int) -> None:
    """Raise unless ``mean`` and ``std`` hold one finite number per channel (or one for all)
    and every ``std`` is positive.
    """
    try:
        m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        s = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"mean and std must be sequences of numbers, got {mean!r} and {std!r}") from None
    for name, t in (("mean", m), ("std", s)):
        if t.numel() not in (1, channels):
            raise ValueError(
                f"{name} must have one value per input channel ({channels}) or one for all, got {t.numel()}"
            )
    if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(s).all()) and bool((s > 0).all())):
        raise ValueError(f"mean must be finite and std positive, got mean={mean!r}, std={std!r}")


class Network:
    """A residual network with its input normalization, discovered structure and linearization.

    Args:
        model: the network, taking *normalized* inputs, in eval mode (a model wrapped in
            ``nn.DataParallel`` or ``DistributedDataParallel`` is analysed as the model inside).
        mean: per-channel input mean (``None``: images go in unchanged).
        std: per-channel input std.
        name: a label for outputs.
        input_shape: shape of one input image ``(C, H, W)`` (default ``(3, 32, 32)``; ``C = 1``
            for a grayscale network), for shape discovery; every image given to the network
            must have ``C`` channels.
        unit_types: extra module classes to treat as residual units (autodiff Jacobian only,
            unless they match a recognized form).
        sha256: checksum of the weights file, when loaded from one.

    Raises:
        ValueError: for a model in training mode or one without residual units.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        *,
        name: str | None = None,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        unit_types: tuple[type, ...] = (),
        sha256: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        # (Distributed)DataParallel only replicates the model it wraps, and torch's functional
        # calls (the forward passes in another dtype) refuse it: analyse the wrapped model
        # torch.compile's OptimizedModule computes what the module inside computes; hooks and
        # functional calls in other dtypes would only recompile it
        while isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel) or _is_compiled(model):
            model = model._orig_mod if _is_compiled(model) else model.module
        _check_eval(model)
        lazy = [n for n, t in model.state_dict(keep_vars=True).items() if is_lazy(t)]
        if lazy:
            # linstab's first forward pass would initialize them (changing the user's model), and
            # the checks of the weights before it cannot read them
            raise ValueError(
                f"the model has uninitialized lazy parameters ({', '.join(lazy[:3])}; nn.LazyConv2d, "
                "nn.LazyLinear, ...): run it once on a batch of its inputs, e.g. model(torch.zeros(1, C, H, "
                "W)), before passing it to linstab"
            )
        meta = [n for n, t in model.state_dict(keep_vars=True).items() if t.device.type == "meta"]
        if meta:
            raise ValueError(
                f"the model's weights are on the 'meta' device (no values: {', '.join(meta[:3])}): "
                "load them first, e.g. model.to_empty(device='cpu') then model.load_state_dict(...)"
            )
        inference = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_inference()]
        if inference:
            # they have no version counter (edits of the weights would go unseen) and cannot be
            # saved for the autodiff Jacobians' backward passes
            raise ValueError(
                f"the model's weights are inference tensors ({', '.join(inference[:3])}): the model was "
                "built or loaded inside torch.inference_mode(); build it outside (the network may then be "
                "analysed inside torch.inference_mode())"
            )
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in input_shape
        ):
            raise ValueError(
                f"input_shape must be (C, H, W) with positive ints (C = 3 for RGB), got {input_shape}"
            )
        input_shape = tuple(int(v) for v in input_shape)
        if mean is not None:
            _check_normalization(mean, std, input_shape[0])
        self.model = model
        self.mean, self.std = mean, std
        if mean is not None:
            self.module = _models.Normalize(model, mean, std)
            self.module.training = False  # the wrapper only (not recursive): the model is in eval
        else:
            self.module = model
        self.name = name or type(model).__name__
        self.input_shape = tuple(input_shape)
        self.sha256 = sha256
        self.spec: _models.CheckpointSpec | None = None
        #: what ``load_model`` was given for it (registry name, model file, ``module:function``
        #: factory, ``torchvision:...``); None for a Network built directly.
        self.source: str | None = None
        self._state_hash: tuple | None = None
        if isinstance(unit_types, type):
            unit_types = (unit_types,)
        try:
            unit_types = tuple(unit_types)
        except TypeError:
            raise TypeError(
                f"unit_types must be a tuple of module classes, got {type(unit_types).__name__}"
            ) from None
        bad = [t for t in unit_types if not (isinstance(t, type) and issubclass(t, nn.Module))]
        if bad:
            raise TypeError(f"unit_types must hold torch.nn.Module subclasses, got {bad!r}")
        self.unit_types = unit_types
        self.units = self._discover(unit_types)

    # -- structure ---------------------------------------------------------------------------
    def _discover(self, unit_types: tuple[type, ...]) -> list[UnitInfo]:
        found: list[tuple[str, nn.Module]] = []
        # a class recognized once is a unit everywhere: e.g. a pre-activation block whose
        # identity instances lack the ``shortcut`` attribute its down-sampling instances have
        recognized = {type(m) for name, m in self.model.named_modules() if name and is_residual_unit(m)}
        for name, m in self.model.named_modules():
            if any(name.startswith(f + ".") for f, _ in found):
                continue
            if name and (
                type(m) in recognized or is_residual_unit(m) or (unit_types and isinstance(m, unit_types))
            ):
                found.append((name, m))
        if not found:
            if is_residual_unit(self.model) or (unit_types and isinstance(self.model, unit_types)):
                raise ValueError(
                    f"the model ({type(self.model).__name__}) is itself one residual unit: linstab looks "
                    "for units inside a network; wrap it, e.g. linstab.Network(nn.Sequential(block), ...)"
                )
            raise ValueError(
                f"no residual units found in {type(self.model).__name__}: linstab recognizes "
                "linstab/pytorchcv ResUnit, akamaster and torchvision BasicBlock/Bottleneck; pass "
                "unit_types=(YourBlock,) for others"
            )
        state = self.model.state_dict().items()
        bad = [k for k, t in state if t.is_floating_point() and not bool(t.isfinite().all())]
        if bad:
            raise ValueError(
                f"{type(self.model).__name__} has NaN or infinite values in {len(bad)} parameter(s) or "
                f"buffer(s) (e.g. {', '.join(bad[:3])}): its Jacobians would be NaN"
            )
        negative = [
            n or "<model>"
            for n, m in self.model.named_modules()
            if isinstance(m, _BatchNorm)
            and m.running_var is not None
            and bool((m.running_var.detach() + m.eps < 0).any())
        ]
        if negative:
            raise ValueError(
                f"batch norm with negative running variances ({', '.join(negative[:3])}): "
                "sqrt(running_var + eps) is NaN, so every output and Jacobian would be NaN; "
                "the statistics are damaged (a variance is never negative)"
            )
        g = torch.Generator().manual_seed(0)
        try:
            x = torch.rand((1, *self.input_shape), generator=g).to(self._reference()[0])
            ins, outs, order = self._trace(
                [m for _, m in found], x, torch.float32, names=[n for n, _ in found], discovering=True
            )
        except RuntimeError as exc:  # e.g. a first convolution that takes another channel count
            raise ValueError(
                f"{type(self.model).__name__} does not run on images of input_shape "
                f"{self.input_shape} (C, H, W): {exc}"
            ) from None
        except TypeError as exc:  # e.g. a forward that needs more arguments than the images
            raise ValueError(
                f"{type(self.model).__name__} does not run as model(images) on a batch of shape "
                f"{(1, *self.input_shape)}: {type(exc).__name__}: {exc}; linstab calls the model with the "
                "images alone: wrap it in a module whose forward(x) supplies the other arguments"
            ) from None
        if not isinstance(self._last_logits, torch.Tensor):
            raise TypeError(
                f"{type(self.model).__name__} returns {type(self._last_logits).__name__}, expected the "
                "logits as one tensor (N, classes): wrap the model in a module whose forward returns "
                "that tensor (e.g. its first output)"
            )
        self._check_deterministic(x)
        skipped = [name for i, (name, _) in enumerate(found) if i not in order]
        if skipped:
            warnings.warn(
                f"{len(skipped)} residual module(s) of {type(self.model).__name__} are not run by its "
                f"forward pass and are not units: {', '.join(skipped[:5])}",
                stacklevel=3,
            )
        # units in the order the forward pass runs them (not the order they were defined in)
        found = [found[i] for i in order]
        units: list[UnitInfo] = []
        stage, index, last_parent, last_out = 0, 0, None, None
        for (name, m), xi, yi in zip(found, ins, outs, strict=True):
            # a stage is a run of consecutive units that share a parent module; a unit that
            # shrinks the spatial size also starts one (units held directly by one module), and
            # so does a unit whose input is not the previous unit's output (a pooling or another
            # layer between them): a stage's Jacobian is the product of its units' Jacobians
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            in_shape, out_shape = tuple(xi.shape[1:]), tuple(yi.shape[1:])
            chained = last_out is not None and last_out.shape == xi.shape and torch.equal(last_out, xi)
            if parent != last_parent or (index and (in_shape[-2:] != out_shape[-2:] or not chained)):
                stage, index, last_parent = stage + 1, 0, parent
            last_out = yi
            index += 1
            canon, shortcut = _closed_form_twin(m, xi, yi)
            if in_shape[-2:] != out_shape[-2:]:
                kind = "downsampling"
            elif in_shape == out_shape and shortcut in ("identity", "unknown"):
                # an unrecognized unit of unchanged shape (pre-activation, GroupNorm, ...) counts
                # with the regular ones: nothing about it is a down-sampling or projection
                kind = "regular"
            else:
                kind = "projection"
            units.append(
                UnitInfo(
                    stage=stage,
                    index=index,
                    name=name,
                    module=m,
                    canonical=canon,
                    kind=kind,
                    shortcut=shortcut,
                    in_shape=in_shape,
                    out_shape=out_shape,
                )
            )
        self._probe = self._state_probe()
        return units

    def _state_probe(self) -> tuple:
        """Identity of every parameter and buffer (storage, version counter, shape, dtype,
        device): it changes whenever the model's state is replaced or changed in place.
        """
        state = self.model.state_dict(keep_vars=True).items()
        return tuple((k, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for k, t in state)

    def _refresh(self) -> None:
        """Discover the units again when the model's state changed since they were discovered
        (``load_state_dict``, an in-place edit, ``model.double()``): the closed forms work on
        copies of the units, which would otherwise keep the old weights.
        """
        if self._state_probe() != self._probe:
            self.units = self._discover(self.unit_types)

    def _reference(self) -> tuple[torch.device, torch.dtype]:
        """Device and dtype of the model's first parameter (or buffer); CPU float32 for a model
        without any.
        """
        t = next(self.module.parameters(), None)
        if t is None:
            t = next((b for b in self.module.buffers() if b.is_floating_point()), None)
        return (t.device, t.dtype) if t is not None else (torch.device("cpu"), torch.float32)

    def _forward(self, x: torch.Tensor, dtype: torch.dtype):
        """The model's output on ``x`` in ``dtype`` (its state cast for a functional call where
        the model's own dtype differs), without gradients.
        """
        with torch.no_grad():
            if dtype == torch.float32 and all(p.dtype == torch.float32 for p in self.module.parameters()):
                return self.module(x.to(dtype))
            state = cast_state(self.module, dtype)
            with kept_tensor_attributes(self.module):
                return torch.func.functional_call(self.module, state, (x.to(dtype),))

    def _check_deterministic(self, x: torch.Tensor) -> None:
        """Refuse a model whose output on one input changes from one call to the next (dropout
        called as ``F.dropout(x, p)``, whose ``training`` defaults to True also in eval mode, or
        noise added in ``forward``): each linearization would be that of another random map.

        Raises:
            ValueError: the logits of a second pass on ``x`` differ from the first's.
        """
        first = self._last_logits
        again = self._forward(x, torch.float32)
        if not isinstance(again, torch.Tensor) or again.shape != first.shape:
            return  # refused by the caller (not one tensor of logits)
        # non-finite logits (refused later, by name) must only sit at the same places
        fin = first.isfinite()
        if torch.equal(fin, again.isfinite()) and torch.equal(
            first[~fin].nan_to_num(), again[~fin].nan_to_num()
        ):
            a, b = first[fin], again[fin]
            scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
            diff = float((b - a).abs().max()) if a.numel() else 0.0
        else:
            scale, diff = 1.0, float("inf")
        if not diff <= 1e-4 * scale:  # device round-off (atomics) stays far below
            raise ValueError(
                f"{type(self.model).__name__} is not deterministic in eval mode: two forward passes on "
                f"the same image give logits {diff:.3g} apart, so its Jacobians would be those of one "
                "random draw. Remove the randomness from forward: call dropout as "
                "F.dropout(x, p, training=self.training) or use nn.Dropout modules, and add no noise "
                "in eval mode"
            )

    def _trace(
        self,
        mods: list[nn.Module],
        x: torch.Tensor,
        dtype: torch.dtype,
        copy: bool = False,
        *,
        names: list[str] | None = None,
        discovering: bool = False,
    ):
        """Run the model once (in ``dtype``) and record each module's input and output.

        The records are the tensors themselves; when the forward pass changed one of them in
        place afterwards (a block doing ``x += out`` on its input, or on the previous block's
        output), the pass is run again recording copies (``copy``).

        Returns:
            ``(ins, outs)`` in the order of ``mods``; when ``discovering``, ``(ins, outs, order)``
            with the modules the pass ran in the order it first ran them (``order`` holds indices
            into ``mods``; modules it did not run are left out instead of refused).

        Raises:
            ValueError: a module runs more than once in one pass (its records would describe its
                first application only), or (unless ``discovering``) does not run at all.
        """
        self.check_eval()  # the model may have been put back in training mode since
        self._check_size(x, self.name)
        if names is None:
            known = {id(u.module): u.name for u in getattr(self, "units", [])}
            names = [known.get(id(m), type(m).__name__) for m in mods]
        ins: dict[int, tuple[torch.Tensor, int]] = {}
        outs: dict[int, tuple[torch.Tensor, int]] = {}
        calls = [0] * len(mods)
        order: list[int] = []
        handles = []
        extras: dict[int, str] = {}  # units called with more than their input
        not_tensor: dict[int, str] = {}  # units whose output is not one tensor

        def record(t: torch.Tensor) -> tuple[torch.Tensor, int]:
            t = t.detach()  # shares the version counter of the forward pass's tensor
            return (t.clone() if copy else t), t._version

        for i, m in enumerate(mods):

            def pre(_m, args, kwargs, i=i):
                calls[i] += 1
                if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                    given = [type(a).__name__ for a in args[1:]] + [f"{k}=" for k in kwargs]
                    extras[i] = ", ".join(given) if given else "no tensor input"
                    return
                if i not in ins:
                    order.append(i)
                    ins[i] = record(args[0])

            def post(_m, _args, out, i=i):
                if not isinstance(out, torch.Tensor):
                    not_tensor[i] = type(out).__name__
                elif i not in outs:
                    outs[i] = record(out)

            # first of the pre-hooks: the unit's input is what its caller passed, before any
            # hook of the user's changes it (the unit's map, module(x), includes those hooks)
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))
            handles.append(m.register_forward_hook(post))
        try:
            # the records' version counters catch in-place changes; tensors made under a caller's
            # torch.inference_mode() have none, so the pass runs outside it (on a normal copy of x)
            with torch.inference_mode(False):
                logits = self._forward(x.clone() if x.is_inference() else x, dtype)
        finally:
            for h in handles:
                h.remove()
        if extras:
            said = [f"{names[i]} ({extras[i]})" for i in sorted(extras)]
            raise ValueError(
                f"residual unit(s) called with more than their input tensor: {', '.join(said[:5])}; "
                "linstab linearizes each unit as the map x -> unit(x) of its input alone, so extra "
                "arguments would be left out of its Jacobian. Make fixed settings attributes of the "
                "module (e.g. self.scale = 0.5 in its __init__) and keep extra inputs out of the unit"
            )
        if not_tensor:
            said = [f"{names[i]} ({not_tensor[i]})" for i in sorted(not_tensor)]
            raise ValueError(
                f"residual unit(s) that do not return one tensor: {', '.join(said[:5])}; linstab "
                "linearizes maps x -> unit(x) from a tensor to a tensor. Return the activation alone "
                "(e.g. a wrapper module whose forward returns unit(x)[0])"
            )
        repeated = [f"{names[i]} ({c} times)" for i, c in enumerate(calls) if c > 1]
        if repeated:
            raise ValueError(
                f"residual unit(s) run more than once in one forward pass: {', '.join(repeated[:5])}; "
                "linstab linearizes each unit module at one input, so a module applied repeatedly "
                "(shared weights) would give wrong stage and network Jacobians. Build the model with "
                "one module per application"
            )
        missing = [names[i] for i in range(len(mods)) if i not in ins]
        if missing and not discovering:
            raise ValueError(
                f"{len(missing)} discovered units were not run by the forward pass: {', '.join(missing[:5])}"
            )
        if not copy and any(t._version != v for t, v in (*ins.values(), *outs.values())):
            return self._trace(mods, x, dtype, copy=True, names=names, discovering=discovering)
        self._last_logits = logits
        ins_l = [ins[i][0] for i in (order if discovering else range(len(mods)))]
        outs_l = [outs[i][0] for i in (order if discovering else range(len(mods)))]
        return (ins_l, outs_l, order) if discovering else (ins_l, outs_l)

    @property
    def stages(self) -> list[list[UnitInfo]]:
        """Units grouped by stage, in order."""
        out: list[list[UnitInfo]] = []
        for u in self.units:
            if u.stage > len(out):
                out.append([])
            out[-1].append(u)
        return out

    def unit(self, stage: int, index: int) -> UnitInfo:
        """The unit at a 1-based address.

        Raises:
            TypeError: for a stage or index that is not an int.
            ValueError: for an address outside the network, naming the valid ranges.
        """
        for what, v in (("stage", stage), ("index", index)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"unit {what} must be an int (1-based), got {v!r}; e.g. net.unit(1, 5)")
        stage, index = int(stage), int(index)
        stages = self.stages
        if not 1 <= stage <= len(stages):
            raise ValueError(f"stage must be in 1..{len(stages)}, got {stage}")
        if not 1 <= index <= len(stages[stage - 1]):
            raise ValueError(f"unit of stage {stage} must be in 1..{len(stages[stage - 1])}, got {index}")
        return stages[stage - 1][index - 1]

    def describe(self) -> str:
        """A text table of the units."""
        rows = [f"{self.name}: {len(self.units)} units in {len(self.stages)} stages"]
        for u in self.units:
            rows.append(
                f"  {u.address:>6} {u.name:<28} {u.kind:<13} {u.shortcut:<14} {u.in_shape} -> {u.out_shape}"
            )
        return "\n".join(rows)

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a model without any)."""
        return self._reference()[0]

    # -- identity ----------------------------------------------------------------------------
    def state_sha256(self) -> str:
        """SHA-256 over the model's state dict (parameters and buffers: names, dtypes, shapes,
        bytes; sorted by name).

        Computed again only when a tensor was replaced or changed in place since the last call
        (its storage or version counter differs), so a user's edits are always seen.
        """
        state = sorted(self.module.state_dict(keep_vars=True).items())
        probe = tuple((k, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for k, t in state)
        if self._state_hash is not None and self._state_hash[0] == probe:
            return self._state_hash[1]
        h = hashlib.sha256()
        for name, t in state:
            t = t.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        self._state_hash = (probe, h.hexdigest())
        return self._state_hash[1]

    def architecture_sha256(self) -> str:
        """SHA-256 of the model's structure: every submodule's name, class, ``extra_repr`` and
        plain attributes (``alpha``, ``eps``, ``stride``, ...), and the code of the methods of
        every class that is not torch's own (a ``forward`` calling ``F.silu`` instead of
        ``torch.relu``). Two models with the same weights but other activations or skip scales
        get different values.
        """
        h = hashlib.sha256()
        classes: dict[type, None] = {}
        for name, m in self.module.named_modules():
            cls = type(m)
            classes.setdefault(cls)
            h.update(f"{name}|{cls.__module__}.{cls.__qualname__}|{m.extra_repr()}".encode())
            plain = sorted(
                (k, repr(v))
                for k, v in vars(m).items()
                if not k.startswith("_") and k != "training" and _plain(v)
            )
            h.update(repr(plain).encode())
        for cls in classes:
            for klass in cls.__mro__:
                if klass.__module__.startswith("torch.") or klass is object:
                    continue
                for attr, fn in sorted(vars(klass).items()):
                    code = getattr(fn, "__code__", None)
                    if code is not None:
                        h.update(f"{klass.__qualname__}.{attr}".encode())
                        _code_digest(code, h)
        return h.hexdigest()

    def fingerprint(self) -> str:
        """What the network computes, as a key for cached results: :meth:`state_sha256`, the
        input normalization and :meth:`architecture_sha256` (never the name alone: two networks
        of one name, one network before and after an in-place change of its weights, or two
        models with one state dict but other activations or skip scales get different keys).
        """
        h = hashlib.sha256(self.state_sha256().encode())
        h.update(repr((self.mean, self.std)).encode())
        h.update(self.architecture_sha256().encode())
        return h.hexdigest()[:32]

    def to(self, device: str | torch.device) -> Network:
        """Move the model (and the units' closed-form twins) to ``device``, checked first by
        :func:`~linstab.models.device.resolve_device`; returns ``self``.

        This moves the module the network was built from (an explicit request: linstab never
        moves a model on its own).
        """
        dev = resolve_device(device)
        if dev != self.device:
            self._refresh()  # twins of the current weights, before the move
            self.module.to(dev)
            for u in self.units:
                if u.canonical is not None:
                    u.canonical.to(dev)
            self._probe = self._state_probe()  # moved, not changed
        return self

    # -- evaluation --------------------------------------------------------------------------
    def check_eval(self) -> None:
        """Refuse a model put back in training mode after the network was built (batch norm
        would use, and update, batch statistics; linstab never changes the model's mode).

        Raises:
            ValueError: naming modules in training mode.
        """
        _check_eval(self.model)

    def check_input(self, images, *, name: str = "images") -> torch.Tensor:
        """Validate images for this network: ``(C, H, W)`` / ``(N, C, H, W)`` float in [0, 1]
        of the network's ``input_shape``; returns ``(N, C, H, W)``.

        Raises:
            ValueError: wrong shape, channel count or size, NaN/inf, values outside [0, 1].
            TypeError: a non-float input.
        """
        if isinstance(images, torch.Tensor):
            images = images.detach()  # an image that requires grad (an attack's) is read, not differentiated
        x = check_images(images, name=name, channels=self.input_shape[0])
        self._check_size(x, name)
        return x

    def _check_size(self, x: torch.Tensor, name: str) -> None:
        """A batch ``(N, *input_shape)``: the size the units were discovered at."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{name}: expected images of shape {self.input_shape} (the shape {self.name}'s units were "
                f"discovered at), got {tuple(x.shape[1:])}; for another size build the network with "
                "Network(..., input_shape=(C, H, W))"
            )

    def predict(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Logits for images in [0, 1] (``(C, H, W)`` or ``(N, C, H, W)``), normalization included.

        Raises:
            ValueError: for images of the wrong shape or range, a model in training mode, or
                NaN/infinite logits (naming the images' positions).
        """
        check_int("batch_size", batch_size)
        x = self.check_input(images)
        self.check_eval()
        device, dtype = self._reference()
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                out.append(self.module(x[s : s + batch_size].to(device, dtype)))
        logits = torch.cat(out)
        bad = (~logits.isfinite()).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"{self.name}: NaN or infinite logits for {len(bad)} of {logits.shape[0]} images "
                f"(positions {bad[:10]}{' ...' if len(bad) > 10 else ''}): an overflow, or damaged "
                "weights or statistics; no class can be read from them"
            )
        return logits

    def activations(
        self, images: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Stem output, every unit's output and the logits for a batch of images.

        Returns:
            ``(stem_out, unit_outs, logits)``: ``stem_out`` is the input of unit 1.1
            ``(N, C, H, W)``; ``unit_outs[i]`` the output of ``self.units[i]``.
        """
        x = self.check_input(images)
        self._refresh()
        ins, outs = self._trace([u.module for u in self.units], x.to(self.device), dtype)
        return ins[0], outs, self._last_logits

    def linearize(
        self, image: torch.Tensor, dtype: torch.dtype = torch.float32, method: str = "auto"
    ) -> Linearization:
        """Linearize every unit at one image: one forward pass, unit inputs kept.

        Args:
            image: ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1].
            dtype: float32 or float64 (the forward pass runs in this dtype too).
            method: ``"closed"`` (closed form, recognized units only), ``"autodiff"``
                (``torch.func``, any unit) or ``"auto"`` (closed form where available).
        """
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if method not in JACOBIAN_METHODS:
            raise ValueError(f"method must be one of {JACOBIAN_METHODS}, got {method!r}")
        x = self.check_input(image, name="image")
        if x.shape[0] != 1:
            raise ValueError(f"linearize takes one image, got a batch of {x.shape[0]}")
        self._refresh()
        ins, outs = self._trace([u.module for u in self.units], x.to(self.device), dtype)
        for u, a, b in zip(self.units, ins, outs, strict=True):
            if not (bool(a.isfinite().all()) and bool(b.isfinite().all())):
                raise ValueError(
                    f"unit {u.address} ({u.name}) has NaN or infinite activations at this image in {dtype} "
                    "(an overflow?): its Jacobian would be NaN"
                )
        return Linearization(self, x, dtype, method, ins, outs, self._last_logits)
