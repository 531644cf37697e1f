"""Ranking mode against every recommender itemlm has, on exactly the same test users.

    .venv/bin/python benchmarks/ranking_mode.py --model runs/stage2/standard-rank/model --dataset ml-100k-text
    .venv/bin/python benchmarks/ranking_mode.py --model DIR --dataset beauty --users 2000 --trie-users 50

Leave-one-out, full catalogue, items the user consumed removed. Rows: ranking mode, the retriever
alone, MostPop, MF (the model's own CF vectors), SASRec, and trie-constrained generation (the
paper's protocol; slow, so on a seeded subset of the same users, reported with its n). Ranking
mode vs the retriever alone gets a paired bootstrap CI and permutation p per metric. Also: one recommendation
request's latency (20-item history). Only numbers go to --out (JSON): no strings, no dataset text.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from itemlm.bench.stats import paired_comparison
from itemlm.bench.summaries import numbers_only
from itemlm.cf.mostpop import MostPopular
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.cf.evaluate import evaluate_ranking, metrics_from_ranks
from itemlm.models.ilm import ItemLanguageModel
from itemlm.rank.evaluate import evaluate_ranking_mode, evaluation_users, history_scorer, retriever_result
from itemlm.rank.retriever import load_or_train_retriever
from itemlm.rank.samples import ranking_samples, stage_histories

KEYS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def trie_ranks(model: ItemLanguageModel, split, users: np.ndarray, k: int = 10) -> np.ndarray:
    """Rank of the target in the constrained beam search's top k (k = not returned)."""
    all_users, histories, targets = stage_histories(split, "test")
    where = {int(u): i for i, u in enumerate(all_users)}
    ranks = []
    for user in users.tolist():
        index = where[user]
        items = [item for item, _, _ in model.recommend(history=histories[index], k=k, mode="generate")]
        ranks.append(items.index(targets[index]) if targets[index] in items else k)
    return np.array(ranks)


def latency(model: ItemLanguageModel, history: list[int], repeats: int = 5) -> float:
    model.recommend(history=history, k=10)  # warm-up: tokenizer caches, first-call allocations
    began = time.perf_counter()
    for _ in range(repeats):
        model.recommend(history=history, k=10)
    return (time.perf_counter() - began) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stage-2 model folder trained with ranking.enabled=true")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--users", type=int, default=0, help="test users (0: all)")
    parser.add_argument("--trie-users", type=int, default=100, help="users for trie generation (a subset of --users)")
    parser.add_argument("--calibrate", action="store_true",
                        help="refit the head on the validation rows first (Ranker.calibrate); for a model trained "
                             "without ranking.calibrate its bridge has read those rows, which favours the LLM's scores")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)

    model = ItemLanguageModel.from_pretrained(args.model)
    if model.ranker is None:
        raise SystemExit(f"{args.model} has no ranker: train it with ranking.enabled=true")
    split = make_split(load_dataset(args.dataset, args.data_home), "leave-one-out")
    calibration = None
    if args.calibrate:
        rows = ranking_samples(split, model.ranker.retriever, "valid", model.ranker.config, model.catalogue.domain, only_hits=True)
        calibration = model.ranker.calibrate(model, rows) | {"bridge_read_these_rows": not model.ranker.config.calibrate}
    users = evaluation_users(split, "test", args.users)
    began = time.perf_counter()
    ranked = evaluate_ranking_mode(model, split, "test", users=users)
    ranking_seconds = time.perf_counter() - began
    results = {"ranking mode": ranked, "retriever alone": retriever_result(model.ranker.retriever, split, "test", users)}
    results["MostPop"] = evaluate_ranking(MostPopular(split).score, split, "test", users=users)
    vectors = model.catalogue
    results["MF"] = evaluate_ranking(
        lambda u: torch.from_numpy(vectors.user_vectors[u]) @ torch.from_numpy(vectors.item_vectors).T, split, "test", users=users
    )
    if model.ranker.retriever.kind != "sasrec":
        sasrec = load_or_train_retriever(split, "sasrec", dataset=args.dataset, home=args.data_home, progress=True)
        results["SASRec"] = evaluate_ranking(history_scorer(split, "test", sasrec.scores), split, "test", users=users)
    everyone = results["ranking mode"].users
    trie_users = np.sort(np.random.default_rng(1).choice(everyone, min(args.trie_users, len(everyone)), replace=False))
    trie = trie_ranks(model, split, trie_users)

    n = model.ranker.config.candidates
    inside = results["retriever alone"].ranks < n
    rows = {name: {k: result.metrics[k] for k in KEYS} | {"users": len(result.ranks)} for name, result in results.items()}
    rows["trie generation"] = {k: v for k, v in metrics_from_ranks(trie, ks=(5, 10)).items() if k in KEYS} | {"users": len(trie)}
    comparison = {}
    for k in (5, 10):
        a, b = results["ranking mode"].per_example(k), results["retriever alone"].per_example(k)
        for metric in ("hr", "ndcg"):
            comparison[f"{metric.upper()}@{k}"] = paired_comparison(a[metric], b[metric]).to_dict()
    history = stage_histories(split, "test")[1][0][-20:]
    report = {
        "command": "benchmarks/ranking_mode.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, 0)),
        "dataset": args.dataset,
        "candidates": n,
        "retriever": model.ranker.retriever.kind,
        "head": {k: v.detach().tolist() for k, v in model.ranker.head.state_dict().items()},
        "calibration": calibration,
        "results": rows,
        "ranking_mode_vs_retriever": comparison,
        "retriever_recall": float(inside.mean()),
        "in_candidates": {
            "users": int(inside.sum()),
            "ranking mode HR@10": float((results["ranking mode"].ranks[inside] < 10).mean()),
            "retriever HR@10": float((results["retriever alone"].ranks[inside] < 10).mean()),
        },
        "ranking_mode_seconds": round(ranking_seconds, 1),
        "request_seconds_20_item_history": round(latency(model, history), 3),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    print(json.dumps(report, indent=2))
    if args.out:  # numbers only: the command, dataset and machine are printed above and go in docs/benchmarks.md
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(numbers_only(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
