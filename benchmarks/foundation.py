"""Foundation benchmark: how long data -> split -> MF -> full-ranking evaluation takes, and the numbers.

Targets (2 cores): ML-100K prepare + split + MF train + eval under 30 s; full-ranking evaluation of
Amazon Beauty (22,363 users x 12,101 items) under 20 s. Beauty is read from ../shared/data/beauty
and skipped with a message when absent.

    .venv/bin/python benchmarks/foundation.py [--out results/foundation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from itemlm.cf.mf import MFConfig, train_mf
from itemlm.cf.mostpop import MostPopular
from itemlm.data.prepare import PrepareOptions, prepare_dataset
from itemlm.data.splits import leave_one_out_split
from itemlm.cf.evaluate import evaluate_ranking
from itemlm.paths import shared_data_folder

KEYS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20")


def timed(label: str, timings: dict, fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    timings[label] = round(time.perf_counter() - started, 2)
    return value


def run_dataset(name: str, home: Path, mf_config: MFConfig) -> dict:
    timings: dict[str, float] = {}
    dataset = timed("prepare", timings, prepare_dataset, name, PrepareOptions(), home)
    split = timed("split", timings, leave_one_out_split, dataset)
    embeddings = timed("mf_train", timings, train_mf, split, mf_config)
    mostpop = timed("eval_mostpop", timings, evaluate_ranking, MostPopular(split).score, split, "test")
    mf = timed("eval_mf", timings, evaluate_ranking, embeddings.score, split, "test")
    timings["total"] = round(sum(timings.values()), 2)
    return {
        "dataset": dataset.stats_counts(),
        "mf_config": mf_config.__dict__,
        "seconds": timings,
        "test": {
            "MostPop": {k: round(mostpop.metrics[k], 4) for k in KEYS},
            f"MF-{mf_config.algorithm}": {k: round(mf.metrics[k], 4) for k in KEYS},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/foundation.json"))
    args = parser.parse_args()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as home:
        report["runs"]["ml-100k"] = run_dataset("ml-100k", Path(home), MFConfig())
        print(json.dumps(report["runs"]["ml-100k"], indent=2))
        shared = shared_data_folder()
        if shared is None or not (shared / "beauty" / "user_sequence.txt").exists():
            print("skipping Beauty: ../shared/data/beauty is absent")
        else:
            beauty = MFConfig(factors=64, iterations=30, regularization=0.05, alpha=2.0)
            report["runs"]["beauty"] = run_dataset("beauty", Path(home), beauty)
            print(json.dumps(report["runs"]["beauty"], indent=2))
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
