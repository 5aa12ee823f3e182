"""Train linstab's own CIFAR-10 ResNets on the lossy JPEG re-encoding of CIFAR-10.

The training data are the JPEG zips read by :func:`linstab.data.load_cifar10_jpeg` (a quality
~75 re-encoding of CIFAR-10, *not* the original lossless images). They are decoded once and the
uint8 arrays are cached as ``.npy`` files in ``$LINSTAB_CACHE_DIR/cifar10-jpeg`` (default
``~/.cache/linstab/cifar10-jpeg``).

Recipe (defaults): :class:`linstab.models.CifarResNet` (option-B shortcuts), random crop with
4-pixel zero padding and random horizontal flips done batched on tensors, SGD with Nesterov
momentum 0.9, weight decay 5e-4 on convolution/linear weights only (not on batch norm or
biases), a one-cycle learning-rate schedule (warm-up over the first 25 % of the steps, then
cosine annealing to about zero) stepped every batch, batch size 128, cross-entropy loss.
Precision (``precision="auto"``): bf16 autocast on CUDA and on CPUs with native bf16
arithmetic (``avx512_bf16`` or ``amx_bf16``), float32 elsewhere; the precision that ran is
recorded in the recipe and the sidecar. Evaluation on the CPU always runs in float32. Both
precisions use the ``channels_last`` memory format by default (``channels_last=False`` turns it
off); ``compile=True`` wraps the model in ``torch.compile`` (measurements in docs/training.md).

Every epoch a resumable checkpoint (model, optimizer, scheduler, epoch, RNG states and
history) is written atomically; it holds only tensors, dicts, lists, numbers and strings so
it can be read with ``torch.load(weights_only=True)``. At the end the float32 weights are
saved as ``.safetensors`` with a JSON sidecar describing the run, including a ``"registry"``
block read by :func:`linstab.models.registry`.

Command line: ``linstab train --depth 56 --epochs 90 --out FILE.safetensors`` (see docs/training.md).
"""

from .averaging import WeightAverage, recompute_bn_statistics
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
    DEFAULT_CHECKPOINT_SECONDS,
    atomic_write_text,
    default_checkpoint_path,
    evaluate,
    evaluate_loss,
    export_checkpoint,
    train,
)
from .optim import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULT_WARMUP,
    DEFAULT_WEIGHT_DECAY,
    SCHEDULES,
    make_constant_scheduler,
    make_scheduler,
    param_groups,
)
from .precision import PRECISIONS, autocast, cpu_has_native_bf16, is_channels_last, resolve_precision

__all__ = [
    "CHECKPOINT_VERSION",
    "DEFAULT_CHECKPOINT_SECONDS",
    "DATASET_DESCRIPTION",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_LR",
    "DEFAULT_MOMENTUM",
    "DEFAULT_PAD",
    "DEFAULT_WARMUP",
    "DEFAULT_WEIGHT_DECAY",
    "PRECISIONS",
    "SCHEDULES",
    "WeightAverage",
    "atomic_write_text",
    "augment",
    "autocast",
    "cpu_has_native_bf16",
    "data_cache_dir",
    "default_checkpoint_path",
    "evaluate",
    "evaluate_loss",
    "export_checkpoint",
    "is_channels_last",
    "load_split",
    "make_constant_scheduler",
    "make_scheduler",
    "normalize",
    "param_groups",
    "recompute_bn_statistics",
    "resolve_precision",
    "tmp_path",
    "train",
]
