"""One parameter update, the same in both recipes: backward, clip, optimizer and schedule step, clear."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from accelerate import Accelerator


def update_parameters(
    accelerator: Accelerator,
    loss: torch.Tensor,
    parameters: Iterable[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> None:
    """Backpropagate `loss`, clip the gradient norm of `parameters` (0: no clipping) and step."""
    accelerator.backward(loss)
    if grad_clip:
        accelerator.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
