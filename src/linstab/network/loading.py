"""Loading a network by name: registered CIFAR checkpoints, ImageNet networks, model files and
model factories.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch

from .. import models as _models
from ..io.profile import timed
from ..models.registry import is_model_file, list_models, trained_model_spec
from .factories import is_factory_spec, load_factory
from .imagenet import imagenet_network
from .view import Network


def load_model(
    name: str, weights: str | os.PathLike | None = None, *, input_size: int | None = None
) -> Network:
    """Load a registered pre-trained network (weights verified by checksum).

    Args:
        name: a registry name (see :func:`~linstab.models.list_models`), e.g.
            ``"resnet56-akamaster"``, an ImageNet network ``"torchvision:resnet50"`` (224 x 224
            inputs; without ``weights`` it has seeded random weights and its name says so), or
            the path of a ``.safetensors`` model written by ``linstab train`` (its JSON sidecar
            beside it gives the architecture and the SHA-256), or a model factory
            ``"module:function"`` (e.g. ``"mymodels:build"``; the current folder is searched):
            the function, called without arguments, returns a :class:`~linstab.network.Network`
            (named ``name`` unless it set a name itself).
        weights: explicit path of the weights file (not with a factory: it builds its weights).
        input_size: ImageNet networks only: the image size (default 224).

    Raises:
        ValueError: for an unknown name, a file whose checksum differs, or a factory that cannot
            be imported or raises (see :func:`~linstab.network.factories.call_factory`).
        TypeError: a factory that returns anything but a :class:`~linstab.network.Network`.
        FileNotFoundError: when the weights cannot be found (the message says how to supply them).
    """
    # built outside a caller's torch.inference_mode(): weights made there would be inference
    # tensors, which a Network refuses
    with timed("load-model", model=str(name)), torch.inference_mode(False):
        net = _load_model(name, weights, input_size)
    if net.source is None:  # a factory may have set its own
        net.source = os.fspath(name)
    return net


def _load_model(name: str, weights, input_size: int | None) -> Network:
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(
            "model name must be a str (a registry name, a .safetensors file or a factory "
            f"'module:function'), got {name!r}"
        )
    if not name.strip():
        raise ValueError(
            f"model name is empty; give a registered name ({', '.join(list_models())}), a .safetensors "
            "file written by `linstab train`, or a factory 'module:function'"
        )
    if name.lower().startswith("torchvision:"):
        return imagenet_network(name, weights=weights, input_size=224 if input_size is None else input_size)
    if is_factory_spec(name):  # checked before any import: the factory builds the whole network
        if weights is not None:
            raise ValueError(
                f"model factory {name!r} builds its own weights: weights ({os.fspath(weights)}) apply to "
                "registered models and torchvision:...; load them inside the factory instead"
            )
        if input_size is not None:
            raise ValueError(
                f"input_size applies to ImageNet networks (torchvision:...), not to the model factory "
                f"{name!r}: its Network's input_shape sets the image size"
            )
        return load_factory(name)
    if input_size is not None:
        raise ValueError(f"input_size applies to ImageNet networks (torchvision:...), not to {name!r}")
    if is_model_file(name):  # a model trained by `linstab train`: its sidecar says what it is
        if weights is not None:
            raise ValueError(f"give the model file either as the model ({name}) or as weights, not both")
        spec = trained_model_spec(name)
        model, path = _models.build_from_spec(spec, Path(name).expanduser())
        net = Network(model, spec.mean, spec.std, name=spec.name, sha256=_models.sha256_file(path))
        net.spec = spec
        return net
    if name not in _models.REGISTRY:
        hint = ""
        if Path(name).expanduser().exists() or Path(name).suffix:
            # a path (`model.pt`): say what files are read and how other models are named
            hint = (
                "; model files must be .safetensors written by `linstab train` (with their JSON "
                "sidecar); any other PyTorch model is named by a factory 'module:function' whose "
                "function returns linstab.Network(model, mean, std, input_shape=(C, H, W)), or "
                "analysed from Python"
            )
        close = difflib.get_close_matches(name.lower(), list_models(), n=3, cutoff=0.6)
        if close and not hint:
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?"
        raise ValueError(f"unknown model {name!r}{hint}; registered: {', '.join(list_models())}")
    spec = _models.REGISTRY[name]
    model, path = _models.build_from_spec(spec, weights)
    net = Network(model, spec.mean, spec.std, name=name, sha256=_models.sha256_file(path))
    net.spec = spec
    return net
