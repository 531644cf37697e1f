"""Stage-2 evaluation: SC per text task and HR/NDCG for recommendation, seen and unseen prompts.

Text tasks are generated greedily and scored by SC (sentence-embedding cosine with the reference),
split into text-seen and text-held-out subjects; the reference's negative log-likelihood under the
model is reported beside it. Recommendation tasks decode with beam search constrained to
catalogue titles, the user's earlier items excluded; the rank of the held-back item in the
returned top-K gives HR@K / NDCG@K (an item not returned counts as a miss).

An evaluation can be interrupted and resumed: given a `resume_dir`, each finished (task, prompt set)
is written there with a fingerprint of the model and the settings, and a later call with the same
fingerprint reads it back instead of scoring it again (trie generation on every ML-100K test user,
two tasks in two phrasings, is about 43 minutes on 2 cores, so a killed run loses one part at most).
A recommendation part also keeps the batches it has finished, about once a minute: on Beauty's 2,000
users one part is an hour of beam search, and a run killed inside it continues from its last batch
(at the same batch boundaries, so the result is the one an uninterrupted run gives).

Which examples are scored is a pure function of the evaluation seed (`evaluation_plan`), never of
the training seed, so every model evaluated on a dataset answers the very same examples and two
models can be compared example by example (paired bootstrap intervals and permutation tests, `itemlm.bench.stats`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from itemlm.errors import InputError
from itemlm.eval.naming import names_title
from itemlm.io import atomic_write_text, read_json
from itemlm.cf.evaluate import metrics_from_ranks
from itemlm.eval.semantic_similarity import semantic_similarity
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.sample import Sample, group_by_task
from itemlm.tasks.templates import REC_TASKS

EVALUATION_PROTOCOL = 2
"""Raised whenever which examples are scored, or how they are decoded, changes: 2 = the seen and
unseen prompts on the same subjects, greedy answers without repeated 3-grams. Part of every bench
cell's key, so no cell scored under an older protocol is reused or compared with newer ones."""
RANKED_TASKS = ("sequential", "straightforward")
PROMPT_SETS = ("seen", "unseen")


def subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    if len(samples) <= limit:
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), limit, replace=False))
    return [samples[i] for i in keep]


def is_text_task(task: str) -> bool:
    return task not in REC_TASKS or task == "conversational"


def evaluation_plan(samples: list[Sample], max_text_samples: int, max_rec_samples: int, seed: int) -> dict[tuple[str, str], list[Sample]]:
    """(task, prompt set) -> the test samples to score, for test samples built with prompts="all".

    Text tasks give half of their budget to subjects whose text training never read, when there are any.
    Both prompt sets hold every subject in the same order, and the same seeded positions are kept
    from each: the seen and unseen prompts are scored on the same subjects (a paired comparison).
    """
    plan: dict[tuple[str, str], list[Sample]] = {}
    for task, task_samples in group_by_task(samples).items():
        if task not in RANKED_TASKS and not is_text_task(task):
            continue
        for prompt_set in PROMPT_SETS:
            chosen = [s for s in task_samples if s.held_out_prompt == (prompt_set == "unseen")]
            if not chosen:
                continue
            if task in RANKED_TASKS:
                plan[task, prompt_set] = subsample(chosen, max_rec_samples, seed)
                continue
            held = [s for s in chosen if s.text_held_out_subject]
            seen = [s for s in chosen if not s.text_held_out_subject]
            held = subsample(held, max_text_samples // 2, seed)
            plan[task, prompt_set] = held + subsample(seen, max_text_samples - len(held), seed)
    return plan


def example_key(sample: Sample) -> str:
    """Identifies an evaluation example across models: task, phrasing, subject and target."""
    return f"{sample.task}|{sample.template}|item={sample.item}|user={sample.user}|target={sample.target_item}"


def evaluate_text_task(
    model: ItemLanguageModel, samples: list[Sample], batch_size: int, max_new_tokens: int, progress: bool, encoder: str | None = None
) -> tuple[dict, dict]:
    generated: list[str] = []
    nll: list[float] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="generate", disable=not progress, leave=False):
        chunk = samples[start : start + batch_size]
        prompts, targets = [s.prompt for s in chunk], [s.target for s in chunk]
        generated += model.generate(prompts, max_new_tokens)
        nll += model.reference_nll(prompts, targets, max_new_tokens).tolist()
    scores = semantic_similarity(generated, [s.target for s in samples], encoder)
    held = np.array([s.text_held_out_subject for s in samples])
    result = {"SC": float(scores.mean()), "reference_nll": float(np.mean(nll)), "n": len(samples)}
    if held.any():
        result["SC_text_held_out"] = float(scores[held].mean())
        result["SC_text_seen"] = float(scores[~held].mean()) if (~held).any() else float("nan")
    if samples and samples[0].task == "item_title":
        named = np.array([names_title(g, model.catalogue.titles[s.item]) for s, g in zip(samples, generated)])
        result["names_title"] = float(named.mean())
        if held.any():
            result["names_title_text_held_out"] = float(named[held].mean())
            result["names_title_text_seen"] = float(named[~held].mean()) if (~held).any() else float("nan")
    result["examples"] = [
        {"prompt": s.prompt, "reference": s.target, "generated": g, "SC": round(float(c), 3)}
        for s, g, c in list(zip(samples, generated, scores))[:3]
    ]
    per_example = {
        "key": [example_key(s) for s in samples],
        "SC": [round(float(c), 5) for c in scores],
        "reference_nll": [round(float(v), 5) for v in nll],
        "text_held_out": held.tolist(),
        "generated": generated,
    }
    if "names_title" in result:
        per_example["names_title"] = named.tolist()
    return result, per_example


def consumed_before(model: ItemLanguageModel, sample: Sample) -> list[int]:
    """Items to leave out of the ranking: those in the prompt, the user's history before the target
    (`sample.consumed`: at test, training and validation, as MostPop, MF and SASRec leave out) and
    their training history."""
    seen = set(sample.prompt_items()) | set(sample.consumed)
    if sample.user is not None:
        seen.update(model.catalogue.histories[sample.user])
    seen.discard(sample.target_item)
    return sorted(seen)


def evaluate_ranked_task(
    model: ItemLanguageModel, samples: list[Sample], k: int, num_beams: int, batch_size: int, progress: bool,
    part: PartialResult | None = None, save_every_s: float = 60.0,
) -> tuple[dict, dict]:
    """HR/NDCG@5/10 of trie generation on `samples`; with `part`, the finished batches are kept
    (every `save_every_s` seconds) and a later call with the same part continues after them."""
    keys = [example_key(s) for s in samples]
    ranks = part.batches_done(keys, batch_size) if part is not None else []
    saved_at = time.perf_counter()
    batches = range(len(ranks), len(samples), batch_size)
    for start in tqdm(batches, desc="recommend", disable=not progress, leave=False):
        chunk = samples[start : start + batch_size]
        exclude = [consumed_before(model, s) for s in chunk]
        histories = [list(s.consumed) for s in chunk]  # what a retriever prior reads: the user's whole history, as ranking mode does
        for sample, ranked in zip(chunk, model.recommend_prompts([s.prompt for s in chunk], k, exclude, num_beams, histories=histories)):
            items = [item for item, _ in ranked]
            ranks.append(items.index(sample.target_item) if sample.target_item in items else k)
        if part is not None and time.perf_counter() - saved_at >= save_every_s and len(ranks) < len(samples):
            part.keep_batches(keys, batch_size, ranks)
            saved_at = time.perf_counter()
    metrics = metrics_from_ranks(np.array(ranks), ks=(5, 10))
    result = {key: metrics[key] for key in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")} | {"n": len(samples)}
    # rank == k means "not in the top k": a miss at every cut-off up to k
    per_example = {"key": keys, "user": [s.user for s in samples], "rank": ranks}
    return result, per_example


def evaluate_stage2(
    model: ItemLanguageModel,
    samples: list[Sample],
    *,
    max_text_samples: int = 60,
    max_rec_samples: int = 100,
    k: int = 10,
    num_beams: int = 10,
    batch_size: int = 8,
    text_batch_size: int = 32,
    max_new_tokens: int = 40,
    seed: int = 0,
    encoder: str | None = None,
    progress: bool = True,
    resume_dir: Path | None = None,
    model_fingerprint: str = "",
) -> tuple[dict, dict]:
    """(metrics, per-example records), both keyed task -> prompt set ("seen" / "unseen").

    batch_size: prompts per beam search (each has `num_beams` beams); text_batch_size: prompts per
    greedy generation, larger because one new token per row reads all the LLM's weights (on 2 CPU
    cores, 32 rows generate about 2x faster than 8; the batch changes nothing but float rounding).
    encoder: the sentence encoder of SC (None: the packaged all-MiniLM-L6-v2).
    resume_dir: where finished parts are kept and read back (see the module's docstring);
    model_fingerprint names the model's weights (a hash), so parts of another model are never reused.
    """
    model.eval()
    model.consensus_encoder = encoder  # consensus decoding judges agreement with the encoder that scores SC
    settings = {"model": model_fingerprint, "no_repeat_ngram": getattr(model, "no_repeat_ngram", 0), "popularity_prior": getattr(model, "popularity_prior", 0.0), "max_text_samples": max_text_samples, "max_rec_samples": max_rec_samples,
                "k": k, "num_beams": num_beams, "max_new_tokens": max_new_tokens, "seed": seed, "encoder": encoder}
    if getattr(model, "consensus", 0):  # only when on: parts computed before the switch existed stay valid
        settings["consensus"] = model.consensus
    if getattr(model, "retriever_prior", 0.0):  # likewise
        settings["retriever_prior"] = model.retriever_prior
    report: dict = {}
    per_example: dict = {}
    for (task, prompt_set), chosen in evaluation_plan(samples, max_text_samples, max_rec_samples, seed).items():
        kept_for = settings | {"examples": [example_key(s) for s in chosen]}
        if task in RANKED_TASKS:  # parts ranked before the user's validation item was left out are not reused
            kept_for["excluded"] = "history before the target"
        part = PartialResult(resume_dir, f"{task}-{prompt_set}", kept_for)
        if task in RANKED_TASKS:
            result, records = part.read_or(lambda: evaluate_ranked_task(model, chosen, k, num_beams, batch_size, progress, part))
        else:
            result, records = part.read_or(lambda: evaluate_text_task(model, chosen, text_batch_size, max_new_tokens, progress, encoder))
        report.setdefault(task, {})[prompt_set] = result
        per_example.setdefault(task, {})[prompt_set] = records
    return report, per_example


class PartialResult:
    """One finished part of an evaluation (metrics and per-example records) in `folder`/`name`.json,
    valid only for the exact settings it was computed under; no folder, no keeping."""

    def __init__(self, folder: Path | None, name: str, settings: dict):
        self.path = None if folder is None else Path(folder) / f"{name}.json"
        self.settings = settings
        self.started, self.earlier_seconds = time.perf_counter(), 0.0  # set again by read_or

    def seconds(self) -> float:
        """Seconds spent on this part, the kept batches' earlier runs included."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def read(self) -> tuple[dict, dict] | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            kept = read_json(self.path, "partial evaluation")
        except InputError:
            return None  # unreadable: computed again and overwritten
        if not isinstance(kept, dict) or kept.get("settings") != self.settings:
            return None
        return kept["result"], kept["records"]

    def write(self, result: dict, records: dict) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"settings": self.settings, "result": result, "records": records}))
            self.batches_path.unlink(missing_ok=True)

    @property
    def batches_path(self) -> Path:
        return self.path.with_suffix(".batches.json")

    def keep_batches(self, keys: list[str], batch_size: int, values: list) -> None:
        """Keep the per-example values of the batches finished so far (the part is not done)."""
        if self.path is not None:
            kept = {"settings": self.settings, "batch_size": batch_size, "keys": keys[: len(values)], "values": values,
                    "seconds": round(self.seconds(), 1)}
            atomic_write_text(self.batches_path, json.dumps(kept))

    def batches_done(self, keys: list[str], batch_size: int) -> list:
        """The values kept by `keep_batches` for these very examples, batch size and settings, cut to
        whole batches; empty when there are none (or they are unreadable, or of other settings)."""
        if self.path is None or not self.batches_path.exists():
            return []
        try:
            kept = read_json(self.batches_path, "partial evaluation")
        except InputError:
            return []
        if not isinstance(kept, dict) or kept.get("settings") != self.settings or kept.get("batch_size") != batch_size:
            return []
        values, done_keys = kept.get("values"), kept.get("keys")
        if not isinstance(values, list) or done_keys != keys[: len(values)] or len(values) > len(keys):
            return []
        seconds = kept.get("seconds")
        self.earlier_seconds = float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else 0.0
        return values[: len(values) - len(values) % batch_size] if len(values) < len(keys) else values

    def read_or(self, compute: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict]:
        """The kept part, or `compute()`'s with the seconds it took (`result["seconds"]`, earlier runs
        of its kept batches included), written down before it is returned."""
        kept = self.read()
        if kept is not None:
            return kept
        self.started, self.earlier_seconds = time.perf_counter(), 0.0
        result, records = compute()
        result = result | {"seconds": round(self.seconds(), 1)}
        self.write(result, records)
        return result, records
