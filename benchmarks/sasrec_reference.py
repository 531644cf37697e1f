"""SASRec as the bench trains it, over several seeds: test and validation HR/NDCG@10 on every user.

    .venv/bin/python benchmarks/sasrec_reference.py --dataset ml-100k-text --data-home results/standard/data \\
        --seeds 0 1 2 --out docs/results/sasrec_reference_ml100k.json
    .venv/bin/python benchmarks/sasrec_reference.py --dataset beauty --data-home results/standard/data \\
        --seeds 0 1 2 --set max_length=20 epochs=20 --out docs/results/sasrec_reference_beauty.json

The SASRec settings are `SASRecConfig`'s defaults plus --set (bench-standard trains Beauty with
max_length=20 epochs=20). Full-catalogue ranking, the user's earlier items excluded, leave-one-out:
the same evaluator as every reference row of the bench. Only numbers go to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from itemlm.cf.evaluate import evaluate_ranking
from itemlm.cf.sasrec import SASRecConfig, train_sasrec
from itemlm.config import from_dict, parse_override
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split

KEYS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="SASRecConfig fields as key=value")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    split = make_split(load_dataset(args.dataset, args.data_home), "leave-one-out")
    settings = {".".join(key): value for key, value in map(parse_override, args.set)}
    runs = []
    for seed in args.seeds:
        began = time.perf_counter()
        scorer = train_sasrec(split, from_dict(SASRecConfig, settings | {"seed": seed}, "sasrec"), progress=True)
        seconds = round(time.perf_counter() - began, 1)
        test = evaluate_ranking(scorer.for_stage("test").score, split, "test", ks=(5, 10)).metrics
        valid = evaluate_ranking(scorer.for_stage("valid").score, split, "valid", ks=(5, 10)).metrics
        runs.append({"seed": seed, "train_seconds": seconds, "test": {k: test[k] for k in KEYS}, "valid": {k: valid[k] for k in KEYS}})
        print(json.dumps(runs[-1]), flush=True)
    mean = {stage: {k: float(np.mean([run[stage][k] for run in runs])) for k in KEYS} for stage in ("test", "valid")}
    result = {"dataset": args.dataset, "settings": settings, "users": int(len(split.targets("test"))), "runs": runs, "mean": mean}
    print(json.dumps(mean))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
