"""Switching a module between training and evaluation mode for one block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def module_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """Run a block with `module` in training (dropout on) or evaluation mode, then restore its mode."""
    was_training = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was_training)
