"""training"""

from .dataset import (
    DATASET_DESCRIPTION,
    DEFAULT_PAD,
    augment,
    data_cache_dir,
    load_split,
    normalize,
    tmp_path,
)
from .loop import (
    CHECKPOINT_VERSION,
    atomic_write_text,
    default_checkpoint_path,
    evaluate,
    evaluate_loss,
    train,
)
from .optim import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULT_WARMUP,
    DEFAULT_WEIGHT_DECAY,
    make_scheduler,
    param_groups,
)
from .precision import PRECISIONS, autocast, cpu_has_native_bf16, is_channels_last, resolve_precision

__all__ = [
    "CHECKPOINT_VERSION",
    "DATASET_DESCRIPTION",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_LR",
    "DEFAULT_MOMENTUM",
    "DEFAULT_PAD",
    "DEFAULT_WARMUP",
    "DEFAULT_WEIGHT_DECAY",
    "PRECISIONS",
    "atomic_write_text",
    "augment",
    "autocast",
    "cpu_has_native_bf16",
    "data_cache_dir",
    "default_checkpoint_path",
    "evaluate",
    "evaluate_loss",
    "is_channels_last",
    "load_split",
    "make_scheduler",
    "normalize",
    "param_groups",
    "resolve_precision",
    "tmp_path",
    "train",
]
