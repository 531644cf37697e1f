"""Learning-rate schedule shared by the recipes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, floor: float = 0.1,
                  scale: Callable[[int], float] | None = None):
    """Linear warmup to each group's rate, then cosine decay to `floor` times it; `scale(step)`
    multiplies the result (a curriculum phase's own `lr_scale`).

    Kept here rather than transformers' `get_cosine_with_min_lr_schedule_with_warmup` because that
    one starts at a rate of exactly 0 (its first step is wasted: with a few hundred steps on a CPU,
    each one counts) and its progress ends at `total_steps`, not at the last step taken.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    if scale is None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step) * scale(step))
