"""Stochastic weight averaging (Izmailov et al., 2018): an equal-weight running mean of a
model's parameters, and batch-norm statistics recomputed for the averaged weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..io.validate import check_int
from .dataset import normalize
from .precision import is_channels_last


class WeightAverage:
    """Equal-weight running mean of a model's parameters (not its buffers).

    Call :meth:`update` with the model at each point to average (e.g. the end of every epoch);
    :meth:`copy_to` writes the mean into a model of the same architecture. Batch-norm running
    statistics are not averaged: the mean of statistics of different weights describes none of
    them, so they are recomputed for the averaged weights (:func:`recompute_bn_statistics`).

    Args:
        model: the model whose parameters are averaged; only their names and shapes are read here.
    """

    def __init__(self, model: nn.Module):
        self.count = 0
        self.mean = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in model.named_parameters()}

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        if params.keys() != self.mean.keys():
            raise ValueError("the model's parameters differ from those this average was made for")
        return params

    def update(self, model: nn.Module) -> None:
        """Add the model's current parameters to the mean (float64 accumulation)."""
        params = self._params(model)
        self.count += 1
        with torch.no_grad():
            for k, avg in self.mean.items():
                avg += (params[k].detach().to(avg.device, torch.float64) - avg) / self.count

    def copy_to(self, model: nn.Module) -> None:
        """Write the mean into ``model``'s parameters (in their dtype and device)."""
        if self.count == 0:
            raise ValueError("no weights averaged yet: call update() first")
        params = self._params(model)
        with torch.no_grad():
            for k, avg in self.mean.items():
                params[k].copy_(avg.to(params[k].dtype))

    def state_dict(self) -> dict:
        """The count and the mean (CPU tensors), for a checkpoint."""
        return {"count": self.count, "mean": {k: v.detach().cpu() for k, v in self.mean.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (the parameter names must match)."""
        if set(state["mean"]) != set(self.mean):
            raise ValueError("the averaged weights in the checkpoint belong to another architecture")
        self.count = int(state["count"])
        for k, v in state["mean"].items():
            self.mean[k] = v.to(self.mean[k].device, torch.float64).clone()


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 500,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Recompute every batch-norm layer's running mean and variance over ``images``.

    The statistics are reset and accumulated as an equal-weight average over the batches (the
    layers' momentum is set to ``None`` meanwhile and restored afterwards), in float32, with the
    model in training mode; the model's mode is restored at the end.

    The statistics must describe the inputs the weights were trained on: a network trained on
    augmented images learned its weights under batch statistics of augmented batches, so pass
    the training augmentation as ``transform`` (as ``linstab train`` does). Statistics of the
    plain images differ (random crops bring zero padding into the first layer's input) and cost
    a trained ResNet-110 4.7 points of training accuracy (docs/training.md). The images are
    visited in a random order, so that every batch mixes the classes as the shuffled training
    batches did: a data set stored class by class gives single-class batches otherwise, whose
    statistics (within one class) underestimate the variances and shift every later layer.

    Args:
        model: a network taking normalized inputs (``(x - mean) / std``).
        images: ``(N, 3, H, W)`` uint8 (or float in [0, 1]) images.
        mean: per-channel normalization mean.
        std: per-channel normalization std.
        batch_size: images per forward pass.
        transform: applied to each batch of ``images`` before normalization, e.g.
            ``lambda b: augment(b, generator)``; ``None``: the images as given.
        generator: a CPU :class:`torch.Generator` for the order of the images (``None``: one
            seeded with 0), so the statistics are reproducible.

    Returns:
        the number of batch-norm layers updated.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch of images (N, 3, H, W); got {tuple(images.shape)}")
    check_int("batch_size", batch_size)
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    order = torch.randperm(images.shape[0], generator=gen)
    param = next(model.parameters())
    momenta = [m.momentum for m in bns]
    channels_last = is_channels_last(model)
    was_training = model.training
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for i in range(0, images.shape[0], batch_size):
            batch = images[order[i : i + batch_size].to(images.device)]
            if transform is not None:
                batch = transform(batch)
            x = normalize(batch.to(param.device), mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return len(bns)
