"""Descriptions started from the model's own genre reading: an inference-only probe for unread items.

For an item whose text training never read, the bridge's title vectors interpolate other titles and
the LLM describes a film that does not exist ("The movie "Jogging Shame" (1992) is a 1980s British
comedy-drama ..."), below the CF neighbour's reference. Its genre answers, though, carry over to
those items (the tag vectors are read from the CF vector). This script asks the run's model, on the
evaluation's own item_description examples (`evaluation_plan`: the same subjects and phrasings):

    own        the run's own answers (from its per_example.json)
    genres     the model's genre reading as a sentence, "A comedy and drama film."
               (`ItemLanguageModel.read_genres`, the shape of the genres-only floor)
    kind       the same with a year, "A 1994 comedy and drama film." (`ItemLanguageModel.kind_sentences`:
               the median year of the item's 10 nearest text-seen items in CF space; what `describe`
               and the chat say of an item whose text the model never read)
    kind, year of the title answer
               the year in the model's free answer to the title question (the LLM's own reading)
    kind, year of the name
               the year of the catalogue title the vectors are closest to (`ItemLanguageModel.name`)
    kind, most common year
               a control: the year most text-seen items came out, the same for every item (how much
               of the year's worth is the form of the sentence rather than the reading)
    grounded   the description question again, the answer started with the genre sentence's phrase and
               continued by the model; with --consensus N, the continuation is the consensus of the
               greedy one and N samples (`itemlm.models.consensus`)

and scores each with the run's sentence encoder against the references, beside the CF neighbour's
and the true genres-only floors on the same examples, with paired bootstraps of each variant
against the run's own answers and against the CF neighbour's floor. Text-seen and text-held-out
subjects are reported apart, with how often each year source is the item's own year (and its mean
absolute error, the CF neighbour's year beside them). Numbers only (no dataset text).

    .venv/bin/python benchmarks/grounded_description_probe.py \\
        --run results/standard/cells/ml-100k-text/<cell>/run --out docs/results/grounded_descriptions_<cell>_ml100k.json
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from evaluate_tasks import load_run, scored_examples, write_result  # this folder's script: runs and their per-example records

YEAR_SOURCES = ("CF neighbours' median (kind)", "title answer", "name", "most common", "CF nearest neighbour")
VARIANTS = ("genres", "kind", "kind, year of the title answer", "kind, year of the name", "kind, most common year", "grounded")


def read_items(model, items: list[int], batch_size: int) -> dict[int, tuple]:
    """Per item, what the model reads from its vectors: genres, the CF neighbours' median year (what
    `describe` says), the year in its free answer to the title question, the year of its name."""
    from itemlm.tasks.phrasing import title_year
    from itemlm.tasks.templates import item_placeholder

    found = {}
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        answers = model.generate([f"What is the title of {item_placeholder(i)}?" for i in batch], 24)
        readings = zip(model.read_genres(batch), model.catalogue.neighbour_years(batch), answers, model.name(batch))
        for item, (genres, neighbours_year, answer, (_, title, _)) in zip(batch, readings):
            found[item] = (genres, neighbours_year, title_year(answer), title_year(title))
    return found


def year_accuracy(found: np.ndarray, truth: np.ndarray) -> dict:
    """How often `found` is the true year, its mean absolute error where it gives one, and how often it gives none."""
    given = ~np.isnan(found)
    return {"exact": round(float((found == truth).mean()), 4), "missing": round(float((~given).mean()), 4),
            "mean_abs_error": round(float(np.abs(found[given] - truth[given]).mean()), 2) if given.any() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run with its per_example.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--consensus", type=int, default=0, help="grounded answers: the consensus of the greedy one and N samples (0: greedy)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from tqdm import tqdm

    from itemlm.bench.floors import floor_answers
    from itemlm.bench.stats import paired_comparison
    from itemlm.eval.semantic_similarity import semantic_similarity
    from itemlm.eval.stage2_eval import evaluation_plan, example_key
    from itemlm.tasks.build import build_samples
    from itemlm.tasks.facts import ItemFacts
    from itemlm.tasks.phrasing import capitalized, kind_phrase, title_year

    started = time.perf_counter()
    config, dataset, split, model = load_run(args.run)
    domain = model.catalogue.domain
    facts = ItemFacts.from_dataset(dataset, domain)
    samples = build_samples(dataset, split, "test", seed=config.eval_seed, history_length=config.history_length,
                            prompts="all", tasks=["item_description"])
    plan = evaluation_plan(samples, config.eval_text_samples, 0, config.eval_seed)
    scored = scored_examples(args.run)["item_description"]
    cf = SimpleNamespace(item_vectors=model.catalogue.item_vectors, user_vectors=None)
    readable = np.flatnonzero(~model.catalogue.text_held_out)
    seen_years = [title_year(model.catalogue.titles[i]) for i in readable]
    common_year = next(iter(Counter(y for y in seen_years if y is not None).most_common(1)), (None,))[0]
    readings: dict[int, tuple] = {}  # item -> what `read_items` found

    report: dict = {"run": str(args.run), "encoder": config.sc_encoder, "consensus": args.consensus, "prompt_sets": {}}
    for prompt_set in ("seen", "unseen"):
        chosen = plan["item_description", prompt_set]
        references = [s.target for s in chosen]
        held = np.array([s.text_held_out_subject for s in chosen])
        own_by_key = dict(zip(scored[prompt_set]["key"], scored[prompt_set]["SC"]))
        scores = {"own": np.array([own_by_key[example_key(s)] for s in chosen])}
        floors = floor_answers("item_description", chosen, samples, facts, cf, config.eval_seed)
        for name in ("CF neighbour's reference", "genres only"):
            scores[f"floor: {name}"] = semantic_similarity(floors[name], references, config.sc_encoder)
        items, prompts = [s.item for s in chosen], [s.prompt for s in chosen]
        readings.update(read_items(model, [i for i in dict.fromkeys(items) if i not in readings], args.batch_size))
        true_year = np.array([float(title_year(model.catalogue.titles[i]) or np.nan) for i in items])
        answers: dict[str, list[str]] = {variant: [] for variant in VARIANTS}
        years: dict[str, list[float]] = {source: [] for source in YEAR_SOURCES}
        nearest_years = model.catalogue.neighbour_years(items, k=1)
        for item, nearest_year in zip(items, nearest_years):
            genres, *found = readings[item]
            for source, year in zip(YEAR_SOURCES, [*found, common_year, nearest_year]):
                years[source].append(float(year or np.nan))
            for variant, year in zip(VARIANTS[:5], (None, *found[:3], common_year)):
                answers[variant].append(capitalized(kind_phrase(genres, domain, year)) + ".")
        for start in tqdm(range(0, len(chosen), args.batch_size), desc=f"{prompt_set} prompts", leave=False):
            batch = slice(start, start + args.batch_size)
            leads = [sentence.removesuffix(".") for sentence in answers["genres"][batch]]
            continued = model.generate(prompts[batch], config.max_target_tokens, leads, consensus=args.consensus)
            answers["grounded"].extend(lead + rest for lead, rest in zip(leads, continued))
        for variant in VARIANTS:
            scores[variant] = semantic_similarity(answers[variant], references, config.sc_encoder)
        part: dict = {"n": len(chosen)}
        for group, mask in (("text_seen", ~held), ("text_held_out", held)):
            if not mask.any():
                continue
            entry: dict = {"n": int(mask.sum())}
            entry["SC"] = {name: round(float(values[mask].mean()), 4) for name, values in scores.items()}
            if domain == "movies":  # each year source against the item's own year; a missing year is never exact
                entry["year"] = {source: year_accuracy(np.array(found)[mask], true_year[mask]) for source, found in years.items()}
            for variant in VARIANTS:
                entry[f"{variant}_minus_own"] = paired_comparison(scores[variant][mask], scores["own"][mask]).to_dict()
                entry[f"{variant}_minus_cf_neighbour"] = paired_comparison(
                    scores[variant][mask], scores["floor: CF neighbour's reference"][mask]).to_dict()
            entry["kind_minus_most_common_year"] = paired_comparison(  # what the year's reading adds to its form
                scores["kind"][mask], scores["kind, most common year"][mask]).to_dict()
            part[group] = entry
            print(f"{prompt_set} / {group}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry["SC"].items()))
        report["prompt_sets"][prompt_set] = part
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    write_result(report, args.out, shown={"seconds": report["seconds"]})


if __name__ == "__main__":
    main()
