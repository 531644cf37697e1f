"""Naming an item when the answer must be a catalogue title: an inference-only probe.

The item_title task is evaluated on free answers (greedy decoding): a title longer than the
bridge's title vectors is cut, and the LLM has to finish it from what it knows, while a misread
token leaves a title that exists nowhere. A model that knows its catalogue can answer "what is the
title of [item]?" the way it recommends: beam search constrained to the catalogue's titles (the
trie of `ItemLanguageModel.recommend_prompts`), top 1. This script asks a finished run exactly its
evaluation's item_title questions (same subjects, both prompt sets, `evaluation_plan`) that way and
pairs names_title with the run's own free answers, text-seen and text-held-out subjects apart.
Numbers only (no titles).

    .venv/bin/python benchmarks/constrained_naming.py --run results/standard/cells/ml-100k-text/<cell>/run \\
        --out docs/results/constrained_naming_ml100k.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from evaluate_tasks import scored_examples, write_result  # this folder's script: a run's per-example records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run with its per_example.json")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="the first N subjects per prompt set (a quick check)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from itemlm.bench.stats import paired_comparison
    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.eval.naming import names_title
    from itemlm.eval.stage2_eval import evaluation_plan, example_key
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.tasks.build import build_samples
    from itemlm.train.stage2 import Stage2Config

    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    samples = build_samples(dataset, split, "test", seed=config.eval_seed, history_length=config.history_length,
                            prompts="all", tasks=["item_title"])
    plan = evaluation_plan(samples, config.eval_text_samples, 0, config.eval_seed)
    model = ItemLanguageModel.from_pretrained(args.run / "model", dtype=config.eval_dtype)
    titles = model.catalogue.titles
    scored = scored_examples(args.run)["item_title"]
    result: dict = {"run": str(args.run), "beams": args.beams}
    started = time.perf_counter()
    for prompt_set in ("seen", "unseen"):
        subjects = plan["item_title", prompt_set][: args.limit]
        free = dict(zip(scored[prompt_set]["key"], scored[prompt_set]["names_title"]))
        answers: list[int] = []
        for start in range(0, len(subjects), args.batch_size):
            chunk = subjects[start : start + args.batch_size]
            answers += [found[0][0] for found in model.recommend_prompts([s.prompt for s in chunk], k=1, num_beams=args.beams)]
        constrained = np.array([names_title(titles[answer], titles[s.item]) for s, answer in zip(subjects, answers)], dtype=float)
        exact = np.array([answer == s.item for s, answer in zip(subjects, answers)], dtype=float)
        greedy = np.array([float(free[example_key(s)]) for s in subjects])
        held = np.array([s.text_held_out_subject for s in subjects])
        row = {}
        for group, mask in (("text_seen", ~held), ("text_held_out", held)):
            if mask.sum() < 2:
                continue
            comparison = paired_comparison(constrained[mask], greedy[mask], resamples=2000)
            row[group] = {"subjects": int(mask.sum()), "names_title_greedy": round(float(greedy[mask].mean()), 4),
                          "names_title_constrained": round(float(constrained[mask].mean()), 4),
                          "exact_item_constrained": round(float(exact[mask].mean()), 4),
                          "difference": round(comparison.difference, 4), "ci95": [round(comparison.low, 4), round(comparison.high, 4)],
                          "p_value": round(comparison.p_value, 4)}
        result[prompt_set] = row
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
