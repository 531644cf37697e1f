"""A training schedule over tasks: phases with their own task weights, then the full mixture.

The warm start places each text-seen item's vectors near its title's token embeddings; the first
stage-2 steps can then teach the frozen LLM to *read* those vectors (item_title only, short rows,
many items a step) before descriptions and recommendations pull the bridge elsewhere. A phase is

    {"steps": 150, "task_weights": {"item_title": 1.0}, "batch_size": 32, "anchor_weight": 0.0}

and the phases run in order over the first steps of the run; the remaining steps draw from the
run's `task_weights` at the run's batch size. A phase without `task_weights` is a stretch of that
main mixture, so a schedule can also *end* with a naming phase:

    [{"steps": 100, "task_weights": {"item_title": 1.0}}, {"steps": 250}, {"steps": 100, "task_weights": {"item_title": 1.0}}]

A phase of short rows (titles) can afford a larger batch than the mixture; `batch_size` and
`anchor_weight` (the warm start's title regression during the phase, instead of
`warm_start.anchor_weight`) are optional, and so is `anchor_targets`: "titles" (the warm start's
targets) or "current", the bridge's own vectors for the text-seen items as they are when the
phase starts, so that a mixture after a naming phase keeps what that phase taught; `lr_scale`
multiplies the run's learning rate during the phase:

    [{"steps": 150, "task_weights": {"item_title": 1.0}},
     {"steps": 200, "anchor_weight": 10, "anchor_targets": "current", "lr_scale": 10}]

Each phase is its own shuffled mixture (and length buckets), so a phase boundary is a clean cut
in the sample stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from itemlm.config import from_dict
from itemlm.errors import FieldError, InputError
from itemlm.tasks.batching import bucket_by_length
from itemlm.tasks.mixture import mix_samples
from itemlm.tasks.sample import Sample
from itemlm.tasks.templates import TRAINING_TASKS


@dataclass
class Phase:
    """The shape of one phase, checked by the config loader's own rules (types, ranges, unknown keys)."""

    steps: int
    task_weights: dict | None = None  # None: the run's task_weights
    batch_size: int | None = None  # None: the run's
    anchor_weight: float | None = None  # None: warm_start.anchor_weight
    anchor_targets: str | None = None  # None or "titles": the warm start's; "current": the bridge's vectors at the phase's start
    lr_scale: float | None = None  # None: 1; multiplies the run's learning-rate schedule during the phase


ANCHOR_TARGETS = ("titles", "current")


def check_task_weights(weights: Mapping, field: str) -> None:
    """A FieldError unless `weights` maps known task names to finite numbers >= 0."""
    unknown = sorted(str(task) for task in set(weights) - set(TRAINING_TASKS))
    if unknown:
        raise FieldError(field, f"names unknown tasks: {', '.join(unknown)} (tasks: {', '.join(TRAINING_TASKS)})")
    for task, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise FieldError(f"{field}.{task}", f"must be a number >= 0, got {weight!r}")


def check_curriculum(phases: Sequence[Mapping], total_steps: int) -> None:
    """An InputError naming the phase and field unless every phase is a `Phase` with steps >= 1 and known tasks."""
    used = 0
    for index, phase in enumerate(phases):
        where = f"curriculum[{index}]"
        if not isinstance(phase, Mapping):
            raise InputError(f"'{where}' must be a mapping with keys steps and optionally task_weights, batch_size and anchor_weight, got {phase!r}")
        checked = from_dict(Phase, dict(phase), where)
        if checked.anchor_targets not in (None, *ANCHOR_TARGETS):
            raise InputError(f"'{where}.anchor_targets' must be one of {', '.join(ANCHOR_TARGETS)}, got {checked.anchor_targets!r}")
        if checked.lr_scale is not None and not checked.lr_scale > 0:
            raise InputError(f"'{where}.lr_scale' must be positive, got {checked.lr_scale!r}")
        steps, weights = checked.steps, checked.task_weights
        if weights is None:  # a stretch of the main mixture
            used += steps
            continue
        if steps < 1:
            raise InputError(f"'{where}.steps' must be a positive integer, got {steps!r}")
        if not weights:
            raise InputError(f"'{where}.task_weights' must be a non-empty mapping of task to weight")
        check_task_weights(weights, f"{where}.task_weights")
        used += steps
    if phases and used > total_steps:
        raise InputError(f"the curriculum's phases take {used} steps, more than the run's steps={total_steps}")


def schedule_batches(
    samples_by_task: Mapping[str, Sequence[Sample]], phases: Sequence[Mapping], task_weights: Mapping[str, float],
    steps: int, batch_size: int, *, seed: int = 0, length: Callable[[Sample], int] | None = None,
) -> list[list[Sample]]:
    """One batch of training rows per step: each phase's batches in order, then the main mixture's.

    With `length`, rows are batched with rows of similar length inside each phase.
    """
    check_curriculum(phases, steps)
    plan = [(int(p["steps"]), p.get("task_weights") or task_weights, int(p.get("batch_size") or batch_size)) for p in phases]
    plan.append((steps - sum(s for s, _, _ in plan), task_weights, batch_size))
    batches: list[list[Sample]] = []
    for index, (phase_steps, weights, size) in enumerate(plan):
        if phase_steps <= 0:
            continue
        # a different seed per phase: a task in two phases does not replay the same order
        rows = mix_samples(samples_by_task, weights, phase_steps * size, seed + 1000 * index)
        rows = bucket_by_length(rows, size, length, seed=seed + index) if length else rows
        batches += [rows[start : start + size] for start in range(0, len(rows), size)]
    return batches


def phase_start(phases: Sequence[Mapping], step: int) -> int | None:
    """The first step of the phase holding `step` (None past the phases)."""
    end = 0
    for phase in phases:
        if step < end + int(phase["steps"]):
            return end
        end += int(phase["steps"])
    return None


def phase_value(phases: Sequence[Mapping], step: int, key: str, default):
    """The setting `key` at `step`: the phase's own when the step is inside a phase that sets it, else `default`."""
    end = 0
    for phase in phases:
        end += int(phase["steps"])
        if step < end:
            return phase.get(key, default)
    return default
