"""models"""

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
from .registry import REGISTRY, CheckpointSpec, default_model_name, list_models
from .state import cast_state
from .weights import (
    build_from_spec,
    convert_akamaster_state_dict,
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
    "RELU_TYPES",
    "ResidualUnit",
    "SubsamplePad",
    "basic_unit",
    "build_from_spec",
    "cast_state",
    "cifar_resnet",
    "convert_akamaster_state_dict",
    "default_model_name",
    "is_residual_unit",
    "list_models",
    "load_state_dict_file",
    "resolve_weights",
    "sha256_file",
    "to_residual_unit",
    "weights_cache_dir",
]
