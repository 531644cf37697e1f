"""Trie generation with a prior (popularity or the model's retriever), against MostPop and the
retriever alone, on the evaluator's own ranked samples.

    .venv/bin/python benchmarks/trie_prior.py --model DIR --dataset ml-100k-text --stage valid --users 300 --weights 0 0.5 1 2
    .venv/bin/python benchmarks/trie_prior.py --model DIR --dataset ml-100k-text --prior retriever --stage test --users 943 \\
        --weights 8 0 --out docs/results/trie_retriever_prior_ml100k_test.json

Each item's score in the beam search is log p(title | prompt) + w x log prior (`ItemLanguageModel.recommend_prompts`):
`--prior popularity`, training interactions, add-one smoothed; `--prior retriever`, the softmax of ranking mode's
retriever over the catalogue given the user's whole history before the target (the model needs a ranker).
w = 0 is the paper's protocol. Samples: the sequential and straightforward tasks in their training phrasing, chosen
as `itemlm stage2`'s evaluation chooses them (same seed), so the w = 0 row repeats a model's own test numbers.
MostPop and the retriever alone are scored on the same samples with the same exclusions (the prompt's items and
the user's history). Each weight gets a paired bootstrap against MostPop, the retriever and the first weight.
Only numbers go to --out (written after every weight, so a stopped run keeps what it measured).
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
from itemlm.io import atomic_write_text
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.build import build_samples

KEYS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def reference_ranks(model: ItemLanguageModel, samples: list, scores_of, k: int = 10) -> np.ndarray:
    """Rank of each sample's target among the top k of a catalogue scorer, the items the sample may not
    get left out (k = not in the top k; ties broken by item index). scores_of: samples -> [n, items]."""
    ranks = []
    for start in range(0, len(samples), 64):
        chunk = samples[start : start + 64]
        scores = scores_of(chunk).double().clone()
        for row, sample in enumerate(chunk):
            scores[row, consumed_before(model, sample)] = -np.inf
        top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k].tolist()
        ranks += [items.index(s.target_item) if s.target_item in items else k for items, s in zip(top, chunk)]
    return np.array(ranks)


def popularity_scores(model: ItemLanguageModel):
    popularity = torch.as_tensor(model.catalogue.log_popularity(), dtype=torch.float64)
    return lambda chunk: popularity.expand(len(chunk), -1)


def retriever_scores(model: ItemLanguageModel):
    return lambda chunk: model.ranker.retriever.scores([list(s.consumed) for s in chunk])


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
    parser.add_argument("--prior", choices=("popularity", "retriever"), default="popularity")
    parser.add_argument("--tasks", nargs="+", default=["sequential", "straightforward"])
    parser.add_argument("--history-length", type=int, default=None,
                        help="items in a sequential prompt (default: the run's history_length, from config.json beside the model folder)")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)

    model = ItemLanguageModel.from_pretrained(args.model).eval()
    if args.prior == "retriever" and model.ranker is None:
        raise SystemExit(f"{args.model}: this model has no ranker, so no retriever to use as a prior")
    dataset = load_dataset(args.dataset, args.data_home)
    split = make_split(dataset, "leave-one-out")
    history_length = args.history_length or run_history_length(args.model)
    samples = build_samples(dataset, split, args.stage, tasks=args.tasks, seed=0, history_length=history_length, prompts="all")
    plan = {task: chosen for (task, prompt_set), chosen in evaluation_plan(samples, 0, args.users, seed=0).items() if prompt_set == "seen"}
    results: dict = {"stage_is_test": args.stage == "test", "users": args.users, "beams": args.beams, "prior": args.prior, "history_length": history_length, "tasks": {}}
    for task, chosen in plan.items():
        references = {"mostpop": reference_ranks(model, chosen, popularity_scores(model))}
        if model.ranker is not None:
            references["retriever"] = reference_ranks(model, chosen, retriever_scores(model))
        rows = results["tasks"][task] = {"n": len(chosen)} | {name: metrics_of(ranks) for name, ranks in references.items()}
        ranks_at = {}
        for weight in args.weights:
            began = time.perf_counter()
            model.popularity_prior, model.retriever_prior = (weight, 0.0) if args.prior == "popularity" else (0.0, weight)
            _, records = evaluate_ranked_task(model, chosen, 10, args.beams, batch_size=8, progress=True)
            ranks_at[weight] = np.array(records["rank"])
            row = rows[f"w={weight:g}"] = metrics_of(ranks_at[weight]) | {"seconds": round(time.perf_counter() - began, 1)}
            for name, ranks in references.items():
                row[f"hr10_minus_{name}"] = hr10_difference(ranks_at[weight], ranks)
            if weight != args.weights[0]:
                row[f"hr10_minus_w={args.weights[0]:g}"] = hr10_difference(ranks_at[weight], ranks_at[args.weights[0]])
            print(task, f"w={weight:g}", json.dumps(row), flush=True)
            if args.out:
                atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


def run_history_length(model_folder: Path) -> int:
    """The sequential prompts' length the model was trained and evaluated with (its run's config.json)."""
    config = model_folder.parent / "config.json"
    if not config.is_file():
        raise SystemExit(f"{config}: not found; pass --history-length (the stage-2 recipe's history_length)")
    return int(json.loads(config.read_text())["history_length"])


def metrics_of(ranks: np.ndarray) -> dict:
    return {key: float(v) for key, v in metrics_from_ranks(ranks, ks=(5, 10)).items() if key in KEYS}


if __name__ == "__main__":
    main()
