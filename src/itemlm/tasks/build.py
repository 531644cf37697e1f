"""Stage-2 task samples from a dataset and a split: every task's drafts, each given a seeded phrasing.

Everything is a pure function of the seed (`named_rng`), so the same subjects are chosen whichever
prompt set ("seen"/"unseen") is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from itemlm.data.dataset import InteractionDataset
from itemlm.data.splits import Split
from itemlm.errors import InputError
from itemlm.tasks.sample import Sample
from itemlm.tasks.seeding import named_rng
from itemlm.tasks.targets import TargetBuilder
from itemlm.tasks.templates import ALL_TASKS, PROMPT_SETS, TASKS, infer_domain, templates_for

STAGES = ("train", "valid", "test")


def build_samples(
    dataset: InteractionDataset,
    split: Split,
    stage: str,
    *,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    max_per_task: int | None = None,
    history_length: int = 20,
    prompts: str = "seen",
    domain: str | None = None,
    positions_per_user: int = 3,
    strict_text_holdout: bool = False,
) -> list[Sample]:
    """Samples of `tasks` (default: the paper's eight, `TASKS`) for one stage, grouped by task in
    `ALL_TASKS` order.

    prompts: "seen" (training phrasings), "unseen" (the held-out phrasing) or "all": every subject
        twice, once in a seen phrasing and once in the held-out one, so that the two prompt sets
        are compared on the same subjects; training accepts only "seen".
    max_per_task: a seeded subset of at most this many samples per task (kept in subject order).
    history_length: the most recent items a sequential prompt shows.
    domain: "movies" or "products" for the flavoured phrasings and target wording; inferred from
        the dataset when None.
    positions_per_user: training recommendation samples per user and task (the last training
        position, plus random earlier ones).
    strict_text_holdout: in training, also keep held-out items out of recommendation targets,
        profile titles and conversational mentions, so their titles appear in no training target.
    """
    if stage not in STAGES:
        raise InputError(f"stage must be one of {', '.join(STAGES)}, got '{stage}'")
    if prompts not in PROMPT_SETS:
        raise InputError(f"prompts must be one of {', '.join(PROMPT_SETS)}, got '{prompts}'")
    if stage == "train" and prompts != "seen":
        raise InputError("training samples use only the seen phrasings (prompts='seen')")
    unknown = [t for t in (tasks or ()) if t not in ALL_TASKS]
    if unknown:
        raise InputError(f"unknown task(s) {', '.join(unknown)}; tasks are {', '.join(ALL_TASKS)}")
    if history_length < 1 or positions_per_user < 1:
        raise InputError("history_length and positions_per_user must be at least 1")
    if max_per_task is not None and max_per_task < 0:
        raise InputError(f"max_per_task must be non-negative, got {max_per_task}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    domain = domain or infer_domain(dataset)
    builder = TargetBuilder(dataset, split, stage, seed=int(seed), history_length=history_length, domain=domain,
                            positions_per_user=positions_per_user, strict=strict_text_holdout)
    samples: list[Sample] = []
    for task in (t for t in ALL_TASKS if (t in TASKS if tasks is None else t in tasks)):
        drafts = builder.drafts(task)
        if max_per_task is not None and len(drafts) > max_per_task:
            keep = named_rng(seed, stage, task, "subset").choice(len(drafts), size=max_per_task, replace=False)
            drafts = [drafts[k] for k in np.sort(keep)]
        for prompt_set in ("seen", "unseen") if prompts == "all" else (prompts,):
            templates = templates_for(task, domain, prompt_set)
            choice = named_rng(seed, stage, task, "templates").integers(len(templates), size=len(drafts))
            for draft, k in zip(drafts, choice):
                template = templates[k]
                samples.append(Sample(
                    task=task, template=template.name, prompt=template.fill(**draft.fields), target=draft.target,
                    item=draft.item, user=draft.user, target_item=draft.target_item,
                    held_out_prompt=template.held_out, text_held_out_subject=draft.text_held_out_subject,
                    consumed=draft.consumed,
                ))
    return samples
