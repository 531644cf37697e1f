"""The reference recommenders of a bench: MostPop, MF and SASRec on the same split and evaluator.

They rank the full catalogue for every test user (seen items excluded); the per-user ranks are kept
so the report can also score them on exactly the users the LLM was evaluated on.
"""

from __future__ import annotations

import time

from itemlm.cf.mf import CFEmbeddings
from itemlm.cf.mostpop import MostPopular
from itemlm.cf.sasrec import SASRecConfig, train_sasrec
from itemlm.config import from_dict
from itemlm.data.splits import Split
from itemlm.cf.evaluate import evaluate_ranking

NAMES = {"mostpop": "MostPop", "mf": "MF", "sasrec": "SASRec"}


def run_references(split: Split, cf: CFEmbeddings, names: list[str], sasrec: dict, progress: bool = True) -> dict:
    """name -> {metrics (HR/NDCG@5/10 over all test users), seconds, users, ranks}."""
    results = {}
    for name in names:
        started = time.perf_counter()
        if name == "mostpop":
            score = MostPopular(split).score
        elif name == "mf":
            score = cf.score
        else:
            score = train_sasrec(split, from_dict(SASRecConfig, sasrec, "sasrec"), progress=progress).for_stage("test").score
        ranking = evaluate_ranking(score, split, "test", ks=(5, 10))
        results[name] = {
            "metrics": ranking.metrics,
            "seconds": round(time.perf_counter() - started, 1),
            "users": ranking.users.tolist(),
            "ranks": ranking.ranks.tolist(),
        }
    return results
