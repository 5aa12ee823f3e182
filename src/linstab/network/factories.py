"""Model factories: networks a user builds in Python, named ``"module:function"``.

A factory is a function importable as ``module:function`` (e.g. ``"mymodels:build"``, or a
dotted attribute ``"pkg.zoo:Models.build"``) that returns a :class:`~linstab.network.Network`
(the model with its input normalization, input shape and name). :func:`linstab.load_model`
calls it without arguments, so every ``--model`` option accepts it; the sweep calls it with the
keyword arguments of its :class:`~linstab.sweep.ModelSpec`. A module in the current folder is
found even from the ``linstab`` console script, which does not search it by itself.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from torch import nn

from .view import Network

__all__ = ["is_factory_spec", "import_factory", "call_factory", "load_factory"]

_WRAP = "linstab.Network(model, mean, std, input_shape=(C, H, W), name=...)"


def is_factory_spec(name) -> bool:
    """Whether a model name is a factory ``"module:function"`` (any string with a colon that is
    neither ``torchvision:...`` nor a ``.safetensors`` file); malformed ones count too, so that
    :func:`import_factory` says what is wrong with them.
    """
    if not isinstance(name, str) or ":" not in name:
        return False
    return not name.lower().startswith("torchvision:") and not name.lower().endswith(".safetensors")


def _split(spec: str) -> tuple[str, str]:
    """``(module, attribute path)`` of a factory spec, checked for form only."""
    if not isinstance(spec, str):
        raise TypeError(f"a model factory is a str 'module:function', got {type(spec).__name__}")
    if spec.count(":") != 1:
        raise ValueError(f"a model factory is 'module:function' (one colon), got {spec!r}")
    mod, fn = (s.strip() for s in spec.split(":"))
    if not mod or not fn:
        raise ValueError(
            f"a model factory is 'module:function' with both parts, got {spec!r}, e.g. 'mymodels:build'"
        )
    if "/" in mod or "\\" in mod or mod.lower().endswith(".py"):
        stem = os.path.splitext(os.path.basename(mod.replace("\\", "/")))[0] or "mymodels"
        raise ValueError(
            f"model factory {spec!r}: give a module name, not a file path (e.g. '{stem}:{fn}', run "
            "from the folder holding the file, or with the folder on PYTHONPATH)"
        )
    if not all(p.isidentifier() for p in mod.split(".")):
        raise ValueError(f"model factory {spec!r}: {mod!r} is not a module name such as 'pkg.mymodels'")
    if not all(p.isidentifier() for p in fn.split(".")):
        raise ValueError(f"model factory {spec!r}: {fn!r} is not a function name such as 'build'")
    return mod, fn


def _import_module(mod: str, spec: str):
    """Import ``mod`` with the current folder on the import path (added for this import only, and
    only when absent: console scripts do not search it).
    """
    cwd = os.getcwd()
    present = any(os.path.abspath(p or os.curdir) == cwd for p in sys.path if isinstance(p, str))
    if not present:
        sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()  # a module written since the last import is seen
        return importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (mod == exc.name or mod.startswith(exc.name + ".")):
            raise ValueError(
                f"model factory {spec!r}: module {exc.name!r} not found (searched the current folder "
                f"{cwd} and the Python path; is it installed, or is its folder on PYTHONPATH?); a "
                "model factory 'module:function' names a function that returns a linstab.Network"
            ) from exc
        raise ValueError(f"model factory {spec!r}: importing module {mod!r} raised {_describe(exc)}") from exc
    except Exception as exc:  # the module's own code failed (syntax error, a missing dependency, ...)
        raise ValueError(f"model factory {spec!r}: importing module {mod!r} raised {_describe(exc)}") from exc
    finally:
        if not present:
            try:
                sys.path.remove(cwd)
            except ValueError:  # the module removed it itself
                pass


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def import_factory(spec: str) -> Callable:
    """The function named by ``"module:function"``, imported (the current folder is searched).

    Raises:
        ValueError: a malformed spec (an empty part, more than one colon, a file path), a module
            that is not found or fails to import, a missing attribute, or one that is not callable.
    """
    mod, fn = _split(spec)
    obj = _import_module(mod, spec)
    where = mod
    for part in fn.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model factory {spec!r}: {where!r} has no attribute {part!r}")
        obj, where = getattr(obj, part), f"{where}.{part}"
    if not callable(obj):
        raise ValueError(
            f"model factory {spec!r}: {where} is a {type(obj).__name__}, not a function returning a "
            "linstab.Network"
        )
    return obj


def call_factory(spec: str, kwargs: dict | None = None) -> Network:
    """Import the factory ``spec`` and call it with ``kwargs`` (none by default).

    Raises:
        ValueError: see :func:`import_factory`; also when the factory raises (the original
            exception is the ``__cause__``).
        TypeError: when it returns anything but a :class:`~linstab.network.Network` (a bare
            ``nn.Module``: the message says how to wrap it).
    """
    fn = import_factory(spec)
    try:
        net = fn(**(kwargs or {}))
    except Exception as exc:
        raise ValueError(f"model factory {spec!r} raised {_describe(exc)}") from exc
    if isinstance(net, Network):
        return net
    if isinstance(net, nn.Module):
        raise TypeError(
            f"model factory {spec!r} returned a bare {type(net).__name__} (nn.Module); it must return a "
            f"linstab.Network, which carries the input normalization and shape: return {_WRAP}"
        )
    raise TypeError(f"model factory {spec!r} must return a linstab.Network, got {type(net).__name__}")


def load_factory(spec: str) -> Network:
    """The network of the factory ``spec`` called without arguments (what ``load_model`` does with
    ``"module:function"``), named ``spec`` unless the factory named it.

    Raises:
        ValueError, TypeError: see :func:`call_factory`.
    """
    net = call_factory(spec)
    if net.name == type(net.model).__name__:  # Network's default name: the factory gave none
        net.name = spec
    return net
