"""Random draws for task samples that are a pure function of the seed and a few names."""

from __future__ import annotations

import zlib

import numpy as np


def named_rng(seed: int, *names: str) -> np.random.Generator:
    """A Generator per (seed, names), seeded with CRC-32 of the names (never Python's salted `hash`), so
    each (stage, task, purpose) draws the same numbers whatever else is built alongside it."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])
