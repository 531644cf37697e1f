"""The multi-task training mixture: tasks drawn in proportion to their weights, then shuffled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from itemlm.errors import InputError
from itemlm.tasks.sample import Sample
from itemlm.tasks.seeding import named_rng
from itemlm.tasks.templates import TRAINING_TASKS


def mix_samples(
    samples_by_task: Mapping[str, Sequence[Sample]], weights: Mapping[str, float], total: int, seed: int = 0
) -> list[Sample]:
    """A shuffled multi-task mixture of `total` samples, each task's share proportional to its weight.

    Tasks with no samples (e.g. item_description on a dataset without descriptions) get no share
    and the others are rescaled. A task asked for more samples than it has repeats its whole set
    (in fresh orders) before repeating any sample a further time.
    """
    unknown = [t for t in weights if t not in TRAINING_TASKS]
    if unknown:
        raise InputError(f"unknown task(s) in weights: {', '.join(unknown)}; tasks are {', '.join(TRAINING_TASKS)}")
    if any(w < 0 for w in weights.values()):
        raise InputError("task weights must be non-negative")
    if total < 0:
        raise InputError(f"total must be non-negative, got {total}")
    active = [t for t in TRAINING_TASKS if weights.get(t, 0) > 0 and len(samples_by_task.get(t, ())) > 0]
    if not active:
        raise InputError("no task has both a positive weight and samples")
    share = np.array([weights[t] for t in active], dtype=np.float64)
    quota = share / share.sum() * total
    counts = np.floor(quota).astype(int)
    leftover = np.argsort(-(quota - counts), kind="stable")[: total - counts.sum()]
    counts[leftover] += 1
    mixture: list[Sample] = []
    for task, count in zip(active, counts):
        pool = samples_by_task[task]
        rng = named_rng(seed, "mix", task)
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-count // len(pool)))] or [[]])
        mixture.extend(pool[k] for k in order[:count].astype(int))
    shuffle = named_rng(seed, "mix", "shuffle").permutation(len(mixture))
    return [mixture[k] for k in shuffle]
