"""The optimizer's parameter groups and the learning-rate schedules (one-cycle; constant for
stochastic weight averaging).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DEFAULT_LR = 0.2


DEFAULT_BATCH_SIZE = 128


DEFAULT_WEIGHT_DECAY = 5e-4


DEFAULT_MOMENTUM = 0.9


DEFAULT_WARMUP = 0.25


SCHEDULES = ("one-cycle", "swa")
"""``linstab train --schedule``: a one-cycle run, or stochastic weight averaging at a constant
learning rate from a trained model (``--init``)."""


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: weight decay on conv/linear weights, none on BN and biases."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    max_lr: float,
    total_steps: int,
    warmup: float = DEFAULT_WARMUP,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle schedule: cosine warm-up from ``max_lr / 10`` to ``max_lr`` over the first
    ``warmup`` fraction of the steps, then cosine annealing to ``max_lr / 1e4``. Stepped per
    batch; momentum is kept fixed.

    A warm-up of exactly one step (``warmup * total_steps == 1``, e.g. 4 steps at the default
    0.25) is an empty phase that ``OneCycleLR`` divides by; it is shortened by a relative 1e-9,
    so the run starts at the peak and anneals from there, as ``OneCycleLR`` does for any
    warm-up shorter than one step.
    """
    pct_start = warmup
    if float(pct_start * total_steps) - 1 == 0:  # OneCycleLR: (step - 0) / (0 - 0)
        pct_start = warmup * (1.0 - 1e-9)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=10.0,
        final_div_factor=1e3,
    )


def make_constant_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """A constant learning rate (the optimizer's own), stepped per batch like the one-cycle one
    so that both kinds resume from a checkpoint the same way.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)


def _constant(_step: int) -> float:
    return 1.0
