"""Batches of similar length: padding is compute the frozen LLM spends on nothing.

A shuffled multi-task mixture puts a 6-token title answer beside a 60-token description, and the
whole batch is padded to the longest row. Sorting each window of `window` batches by length and
cutting it into batches keeps the mixture's task proportions over the window, while rows of a
batch are alike; the batches of a window are then shuffled so tasks still alternate step to step.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def bucket_by_length(rows: Sequence[T], batch_size: int, length: Callable[[T], int], window: int = 32, seed: int = 0) -> list[T]:
    """`rows` reordered so that consecutive `batch_size` chunks hold rows of similar `length`.

    Deterministic in `seed`; rows never move between windows of `window * batch_size` rows, so
    the first steps of a run still see the mixture's first rows.
    """
    if batch_size < 1 or window < 1:
        raise ValueError("batch_size and window must be at least 1")
    span = batch_size * window
    out: list[T] = []
    for start in range(0, len(rows), span):
        chunk = list(rows[start : start + span])
        order = sorted(range(len(chunk)), key=lambda k: (length(chunk[k]), k))
        batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
        full = len(chunk) // batch_size  # a short last batch stays last, so batches stay aligned
        rng = np.random.default_rng([seed, zlib.crc32(b"buckets"), start])
        for b in [*rng.permutation(full), *range(full, len(batches))]:
            out.extend(chunk[k] for k in batches[b])
    return out
