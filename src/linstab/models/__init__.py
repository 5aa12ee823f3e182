"""CIFAR residual networks, the checkpoint registry and weight loading.

linstab's own module layout follows pytorchcv (``features.init_block``,
``features.stageS.unitK.body.convI.{conv,bn}``, ``identity_conv``, ``output``), so pytorchcv
state dicts load as they are; akamaster checkpoints are mapped onto it.

Shortcut variants of the down-sampling units:

* ``"A"`` (akamaster): ``x[:, :, ::2, ::2]`` zero-padded by ``planes // 4`` channels on each
  side, no parameters;
* ``"B"`` (pytorchcv, the paper's networks): a 1x1 stride-2 convolution followed by batch norm.

Checkpoints are untrusted input: they are read with ``torch.load(..., weights_only=True)`` or
from ``.safetensors``; pickled code is never executed.
"""

from .adapters import RELU_TYPES, is_residual_unit, to_residual_unit
from .blocks import (
    CIFAR10_MEAN_AKAMASTER,
    CIFAR10_MEAN_PYTORCHCV,
    CIFAR10_STD_AKAMASTER,
    CIFAR10_STD_PYTORCHCV,
    CifarResNet,
    ConvBlock,
    Normalize,
    ResidualUnit,
    SubsamplePad,
    basic_unit,
    cifar_resnet,
)
from .registry import (
    REGISTRY,
    SHORTCUT_REFERENCE,
    CheckpointSpec,
    default_model_name,
    default_report_models,
    list_models,
)
from .state import cast_state
from .weights import (
    build_from_spec,
    convert_akamaster_state_dict,
    find_local_weights,
    load_state_dict_file,
    resolve_weights,
    sha256_file,
    weights_cache_dir,
)

__all__ = [
    "CIFAR10_MEAN_AKAMASTER",
    "CIFAR10_MEAN_PYTORCHCV",
    "CIFAR10_STD_AKAMASTER",
    "CIFAR10_STD_PYTORCHCV",
    "CheckpointSpec",
    "CifarResNet",
    "ConvBlock",
    "Normalize",
    "REGISTRY",
    "SHORTCUT_REFERENCE",
    "RELU_TYPES",
    "ResidualUnit",
    "SubsamplePad",
    "basic_unit",
    "build_from_spec",
    "cast_state",
    "cifar_resnet",
    "convert_akamaster_state_dict",
    "find_local_weights",
    "default_model_name",
    "default_report_models",
    "is_residual_unit",
    "list_models",
    "load_state_dict_file",
    "resolve_weights",
    "sha256_file",
    "to_residual_unit",
    "weights_cache_dir",
]
