"""SC floors and ceilings: what trivial answers score under the same encoder, on the same examples.

An SC of 0.4 means nothing alone: MiniLM gives any two movie sentences a cosine of about 0.25. So
beside each model the report prints what these answers score against the very references the
models were scored on:

- generic sentence: one constant sentence for every subject (the floor of fluent text);
- another subject's reference: the right kind of text about the wrong subject;
- genres only: "A comedy, drama movie." (what the genre field alone says);
- CF neighbour's reference: the reference of the subject's nearest text-seen neighbour in CF space,
  what a kNN lookup could say about an item it never read about. On text-held-out items this is
  the bar an item-language model has to clear: below it, the item tokens carry less than kNN;
- title alone, metadata template (title + year + genres): ceilings of a model that only recalls
  metadata perfectly.

Subjects are items for item tasks and users for user_profile (where only the first, second and
fourth apply); the conversational task mixes both and has no floors.
"""

from __future__ import annotations

import numpy as np

from itemlm.cf.mf import CFEmbeddings
from itemlm.data.dataset import InteractionDataset
from itemlm.data.splits import Split
from itemlm.eval.semantic_similarity import semantic_similarity
from itemlm.eval.stage2_eval import evaluation_plan
from itemlm.tasks.build import build_samples
from itemlm.tasks.facts import ItemFacts
from itemlm.tasks.phrasing import tag_phrase, with_article
from itemlm.tasks.sample import Sample
from itemlm.tasks.templates import ITEM_TASKS, infer_domain

FLOORS = (
    "generic sentence",
    "another subject's reference",
    "genres only",
    "CF neighbour's reference",
    "title alone",
    "metadata template",
)
USER_FLOORS = ("generic sentence", "another subject's reference", "CF neighbour's reference")
GENERIC = {
    "movies": ("A popular movie that many people enjoy.", "This viewer enjoys many kinds of movies."),
    "products": ("A popular product that many customers like.", "This customer buys many kinds of products."),
}


def genres_only(facts: ItemFacts, item: int) -> str:
    noun = "movie" if facts.domain == "movies" else "product"
    tags = ", ".join(tag_phrase(t) for t in facts.pick_tags(facts.tags[item], 3))
    phrase = with_article(f"{tags} {noun}" if tags else noun)
    return phrase[0].upper() + phrase[1:] + "."


def metadata_template(facts: ItemFacts, item: int) -> str:
    noun = "movie" if facts.domain == "movies" else "product"
    tags = ", ".join(tag_phrase(t) for t in facts.pick_tags(facts.tags[item], 3))
    brand = f" by {facts.brands[item]}" if facts.brands[item] else ""
    return f"{facts.titles[item]}: {with_article(f'{tags} {noun}' if tags else noun)}{brand}."


def nearest_neighbours(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each query row, the candidate with the highest cosine similarity other than itself."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit[queries] @ unit[candidates].T
    similarity[queries[:, None] == candidates[None, :]] = -np.inf
    return candidates[similarity.argmax(axis=1)]


def floor_answers(task: str, chosen: list[Sample], all_samples: list[Sample], facts: ItemFacts, cf: CFEmbeddings, seed: int) -> dict[str, list[str]]:
    """Floor name -> one answer per chosen sample."""
    on_users = task == "user_profile"
    subject = (lambda s: s.user) if on_users else (lambda s: s.item)
    reference = {subject(s): s.target for s in all_samples if s.task == task}
    candidates = np.array(sorted(k for k in reference if on_users or not facts.held_out[k]))
    subjects = np.array([subject(s) for s in chosen])
    rng = np.random.default_rng(seed)
    others = []
    for own in subjects:
        pick = own
        while pick == own and len(candidates) > 1:
            pick = candidates[rng.integers(len(candidates))]
        others.append(reference[int(pick)])
    neighbours = nearest_neighbours(cf.user_vectors if on_users else cf.item_vectors, subjects, candidates)
    generic = GENERIC[facts.domain][1 if on_users else 0]
    answers = {
        "generic sentence": [generic] * len(chosen),
        "another subject's reference": others,
        "CF neighbour's reference": [reference[int(n)] for n in neighbours],
    }
    if not on_users:
        answers["genres only"] = [genres_only(facts, i) for i in subjects]
        answers["title alone"] = [facts.titles[i] for i in subjects]
        answers["metadata template"] = [metadata_template(facts, i) for i in subjects]
    return {name: answers[name] for name in FLOORS if name in answers}


def sc_floors(
    dataset: InteractionDataset, split: Split, cf: CFEmbeddings, *, eval_seed: int, history_length: int,
    max_text_samples: int, max_rec_samples: int, encoder: str | None = None,
) -> dict:
    """task -> floor -> {SC, SC_text_held_out, SC_text_seen, n, example}, on the examples stage 2 scores."""
    domain = infer_domain(dataset)
    facts = ItemFacts.from_dataset(dataset, domain)
    samples = build_samples(dataset, split, "test", seed=eval_seed, history_length=history_length, prompts="all")
    plan = evaluation_plan(samples, max_text_samples, max_rec_samples, eval_seed)
    result: dict = {}
    for task in (*ITEM_TASKS, "user_profile"):
        chosen = plan.get((task, "seen"), []) + plan.get((task, "unseen"), [])
        if not chosen:
            continue
        references = [s.target for s in chosen]
        held = np.array([s.text_held_out_subject for s in chosen])
        for name, answers in floor_answers(task, chosen, samples, facts, cf, eval_seed).items():
            scores = semantic_similarity(answers, references, encoder)
            entry = {"SC": float(scores.mean()), "n": len(chosen), "example": {"answer": answers[0], "reference": references[0]}}
            if held.any():
                entry["SC_text_held_out"] = float(scores[held].mean())
                entry["SC_text_seen"] = float(scores[~held].mean()) if (~held).any() else float("nan")
            result.setdefault(task, {})[name] = entry
    return result
