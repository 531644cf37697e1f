"""Teach the model what to say about an item whose text it never read (a short stage-2 phase).

After stage 2, the bridge and the LLM stay frozen and only the unknown-title vectors train
(`itemlm.models.unknown_titles`): on text-seen items' description, pitch and genre rows with every
item's title slots replaced by them, so the LLM learns to answer from the tag slots, which the
bridge computes from the CF vector. Nothing the model does for text-seen items changes; at
inference the catalogue's text-held-out items read the learned vectors.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from itemlm.errors import FieldError, InputError
from itemlm.models.modes import module_mode
from itemlm.models.unknown_titles import UnknownTitles
from itemlm.tasks.templates import TRAINING_TASKS
from itemlm.train.warm_start import space_token_id


@dataclass
class UnknownTitlesConfig:
    steps: int = 0  # 0: no unknown-title vectors (text-held-out items read their interpolated title vectors)
    batch_size: int = 16
    learning_rate: float = 3e-3  # a soft prompt from the space-token embedding: a projector-style rate
    tasks: list = field(default_factory=lambda: ["item_description", "item_pitch", "item_genres"])

    def __post_init__(self):
        not_tasks = set(self.tasks) - set(TRAINING_TASKS)
        if not_tasks:
            raise FieldError("unknown_titles.tasks", f"names unknown tasks: {', '.join(sorted(not_tasks))} (tasks: {', '.join(TRAINING_TASKS)})")
        if self.steps < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise FieldError("unknown_titles", f"needs steps >= 0, batch_size >= 1, learning_rate > 0; got {self.steps}, {self.batch_size}, {self.learning_rate}")


def train_unknown_titles(
    model, samples_by_task: dict, config: UnknownTitlesConfig, title_slots: int, *, seed: int = 0,
    max_target_tokens: int = 48, progress: bool = True, keep_going: bool = False,
) -> dict:
    """Fit `model.unknown_titles` on text-seen items' rows; returns a small report.

    The vectors start at the space-token embedding, or with `keep_going` where the model's current
    ones are (another `config.steps` steps, e.g. for a learning curve)."""
    # a dataset without descriptions has no item_description rows: the other tasks train them
    rows = [s for task in config.tasks for s in samples_by_task.get(task, []) if not s.text_held_out_subject]
    if not rows:
        raise InputError(f"unknown_titles: no training rows about text-seen items for {', '.join(config.tasks)}")
    if model.bridge is None or title_slots < 1:
        raise InputError(f"unknown_titles needs a bridge with title slots (got {title_slots}: its vectors minus warm_start.tag_tokens)")
    llm = model.llm
    if not (keep_going and model.unknown_titles is not None):
        with torch.no_grad():
            start = llm.embed(torch.tensor([space_token_id(llm)], device=llm.device)).float()[0]
        model.unknown_titles = UnknownTitles(title_slots, llm.hidden_size, start).to(llm.device)
    model.unknown_titles.requires_grad_(True)
    optimizer = torch.optim.AdamW([model.unknown_titles.vectors], lr=config.learning_rate, weight_decay=0.0)
    frozen = [p for p in model.bridge.parameters() if p.requires_grad]
    rng, losses, started = random.Random(seed), [], time.perf_counter()
    try:
        for p in frozen:
            p.requires_grad_(False)
        model.hide_all_titles = True
        bar = tqdm(range(config.steps), desc="unknown titles", disable=not progress)
        with module_mode(model.bridge, training=False):
            for _ in bar:
                batch = rng.sample(rows, min(config.batch_size, len(rows)))
                loss, _ = model.loss([s.prompt for s in batch], [s.target for s in batch], max_target_tokens)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        model.hide_all_titles = False
        for p in frozen:
            p.requires_grad_(True)
    model.unknown_titles.requires_grad_(False)
    window = max(1, min(25, len(losses)))
    return {"steps": config.steps, "rows": len(rows), "title_slots": title_slots, "seconds": round(time.perf_counter() - started, 1),
            "loss_first": round(float(np.mean(losses[:window])), 4), "loss_last": round(float(np.mean(losses[-window:])), 4)}
