"""Stage-2 evaluation: SC per text task and HR/NDCG for recommendation, seen and unseen prompts.

Text tasks are generated greedily and scored by SC (sentence-embedding cosine with the reference),
split into text-seen and text-held-out subjects. Recommendation tasks decode with beam search
constrained to catalogue titles, the user's earlier items excluded; the rank of the held-back
item in the returned top-K gives HR@K / NDCG@K (an item not returned counts as a miss).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from itemlm.eval.ranking import metrics_from_ranks
from itemlm.eval.semantic_similarity import semantic_similarity
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.samples import Sample, group_by_task
from itemlm.tasks.templates import REC_TASKS

RANKED_TASKS = ("sequential", "straightforward")


def subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    if len(samples) <= limit:
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), limit, replace=False))
    return [samples[i] for i in keep]


def evaluate_text_task(model: ItemLanguageModel, samples: list[Sample], batch_size: int, max_new_tokens: int, progress: bool) -> dict:
    generated: list[str] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="generate", disable=not progress, leave=False):
        chunk = samples[start : start + batch_size]
        generated += model.generate([s.prompt for s in chunk], max_new_tokens)
    scores = semantic_similarity(generated, [s.target for s in samples])
    held = np.array([s.text_held_out_subject for s in samples])
    result = {"SC": float(scores.mean()), "n": len(samples)}
    if held.any():
        result["SC_text_held_out"] = float(scores[held].mean())
        result["SC_text_seen"] = float(scores[~held].mean()) if (~held).any() else float("nan")
    result["examples"] = [
        {"prompt": s.prompt, "reference": s.target, "generated": g, "SC": round(float(c), 3)}
        for s, g, c in list(zip(samples, generated, scores))[:3]
    ]
    return result


def consumed_before(model: ItemLanguageModel, sample: Sample) -> list[int]:
    """Items to leave out of the ranking: those in the prompt and the user's training history."""
    seen = set(sample.prompt_items())
    if sample.user is not None:
        seen.update(model.catalogue.histories[sample.user])
    seen.discard(sample.target_item)
    return sorted(seen)


def evaluate_ranked_task(model: ItemLanguageModel, samples: list[Sample], k: int, num_beams: int, batch_size: int, progress: bool) -> dict:
    ranks = []
    for start in tqdm(range(0, len(samples), batch_size), desc="recommend", disable=not progress, leave=False):
        chunk = samples[start : start + batch_size]
        exclude = [consumed_before(model, s) for s in chunk]
        for sample, ranked in zip(chunk, model.recommend_prompts([s.prompt for s in chunk], k, exclude, num_beams)):
            items = [item for item, _ in ranked]
            ranks.append(items.index(sample.target_item) if sample.target_item in items else k)
    metrics = metrics_from_ranks(np.array(ranks), ks=(5, 10))
    return {key: metrics[key] for key in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")} | {"n": len(samples)}


def evaluate_stage2(
    model: ItemLanguageModel,
    samples: list[Sample],
    *,
    max_text_samples: int = 60,
    max_rec_samples: int = 100,
    k: int = 10,
    num_beams: int = 10,
    batch_size: int = 8,
    max_new_tokens: int = 40,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Metrics per task and prompt set ("seen" / "unseen"), for test-stage samples built with prompts="all"."""
    model.eval()
    report: dict = {}
    for task, task_samples in group_by_task(samples).items():
        for prompt_set in ("seen", "unseen"):
            chosen = [s for s in task_samples if s.held_out_prompt == (prompt_set == "unseen")]
            if not chosen:
                continue
            if task in RANKED_TASKS:
                chosen = subsample(chosen, max_rec_samples, seed)
                report.setdefault(task, {})[prompt_set] = evaluate_ranked_task(model, chosen, k, num_beams, batch_size, progress)
            elif task not in REC_TASKS or task == "conversational":
                # Half of the budget for subjects whose text training never read, when there are any.
                held = [s for s in chosen if s.text_held_out_subject]
                seen = [s for s in chosen if not s.text_held_out_subject]
                chosen = subsample(held, max_text_samples // 2, seed) + subsample(seen, max_text_samples - min(len(held), max_text_samples // 2), seed)
                report.setdefault(task, {})[prompt_set] = evaluate_text_task(model, chosen, batch_size, max_new_tokens, progress)
    return report
