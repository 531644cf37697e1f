"""Trie generation with a popularity prior, against MostPop, on the evaluator's own ranked samples.

    .venv/bin/python benchmarks/trie_prior.py --model DIR --dataset ml-100k-text --stage valid --users 300 --weights 0 0.5 1 2
    .venv/bin/python benchmarks/trie_prior.py --model DIR --dataset ml-100k-text --stage test --users 943 --weights 0 1 \\
        --out docs/results/trie_prior_ml100k.json

Each item's score in the beam search is log p(title | prompt) + w x log popularity (training
interactions, add-one smoothed; `ItemLanguageModel.recommend_prompts`); w = 0 is the paper's
protocol. Samples: the sequential and straightforward tasks in their training phrasing, chosen as
`itemlm stage2`'s evaluation chooses them (same seed), so the w = 0 row repeats a model's own test
numbers. MostPop is scored on the same samples with the same exclusions (the prompt's items and the
user's training history). Each weight gets a paired bootstrap against MostPop and against w = 0.
Only numbers go to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from itemlm.bench.stats import paired_comparison
from itemlm.cf.evaluate import metrics_from_ranks
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.eval.stage2_eval import consumed_before, evaluate_ranked_task, evaluation_plan
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.build import build_samples

KEYS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def popularity_ranks(model: ItemLanguageModel, samples: list, k: int = 10) -> np.ndarray:
    """Rank of each sample's target among the most popular items it may get (k = not in the top k)."""
    order = np.argsort(-model.catalogue.log_popularity(), kind="stable")
    ranks = []
    for sample in samples:
        banned = set(consumed_before(model, sample))
        top = [int(i) for i in order[: k + len(banned)] if int(i) not in banned][:k]
        ranks.append(top.index(sample.target_item) if sample.target_item in top else k)
    return np.array(ranks)


def hr10_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Paired HR@10 difference of two rank arrays on the same samples: mean, 95% CI, permutation p."""
    compared = paired_comparison((a < 10).astype(float), (b < 10).astype(float), resamples=2000)
    return {"diff": compared.difference, "low": compared.low, "high": compared.high, "p": compared.p_value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stage-2 model folder")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--stage", choices=("valid", "test"), default="valid", help="choose w on valid, report on test")
    parser.add_argument("--users", type=int, default=300, help="samples per task (the evaluator's eval_rec_samples)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--tasks", nargs="+", default=["sequential", "straightforward"])
    parser.add_argument("--history-length", type=int, default=20, help="as the stage-2 recipe's history_length")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)

    model = ItemLanguageModel.from_pretrained(args.model).eval()
    dataset = load_dataset(args.dataset, args.data_home)
    split = make_split(dataset, "leave-one-out")
    samples = build_samples(dataset, split, args.stage, tasks=args.tasks, seed=0, history_length=args.history_length, prompts="all")
    plan = {task: chosen for (task, prompt_set), chosen in evaluation_plan(samples, 0, args.users, seed=0).items() if prompt_set == "seen"}
    results: dict = {"stage_is_test": args.stage == "test", "users": args.users, "beams": args.beams, "tasks": {}}
    for task, chosen in plan.items():
        popular = popularity_ranks(model, chosen)
        rows = {"mostpop": {key: float(v) for key, v in metrics_from_ranks(popular, ks=(5, 10)).items() if key in KEYS}}
        ranks_at = {}
        for weight in args.weights:
            began = time.perf_counter()
            model.popularity_prior = weight
            result, records = evaluate_ranked_task(model, chosen, 10, args.beams, batch_size=8, progress=True)
            ranks_at[weight] = np.array(records["rank"])
            rows[f"w={weight:g}"] = {key: result[key] for key in KEYS} | {"seconds": round(time.perf_counter() - began, 1)}
            rows[f"w={weight:g}"]["hr10_minus_mostpop"] = hr10_difference(ranks_at[weight], popular)
            if weight != args.weights[0]:
                rows[f"w={weight:g}"][f"hr10_minus_w={args.weights[0]:g}"] = hr10_difference(ranks_at[weight], ranks_at[args.weights[0]])
            print(task, f"w={weight:g}", json.dumps(rows[f"w={weight:g}"]), flush=True)
        results["tasks"][task] = rows | {"n": len(chosen)}
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
