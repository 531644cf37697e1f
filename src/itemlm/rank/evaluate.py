"""Ranking mode on the leave-one-out protocol: full-catalogue HR/NDCG, every user of a stage.

The ranker's catalogue scores (candidates in the LLM's order above the rest in retriever order)
go through the same `evaluate_ranking` as MostPop, MF and SASRec, so the numbers are comparable
with each of them user by user.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from itemlm.data.splits import Split
from itemlm.cf.evaluate import RankingResult, evaluate_ranking
from itemlm.rank.samples import stage_histories


def history_scorer(split: Split, stage: str, score_histories):
    """A `evaluate_ranking` score function from one over item histories (before the stage's target)."""
    users, histories, _ = stage_histories(split, stage)
    history_of = dict(zip(users.tolist(), histories))

    def score(batch_users: np.ndarray) -> torch.Tensor:
        return score_histories([history_of[int(u)] for u in batch_users])

    return score


def evaluate_ranking_mode(
    model, split: Split, stage: str = "test", *, users: np.ndarray | None = None, batch_size: int = 16, progress: bool = True,
) -> RankingResult:
    """HR/NDCG of the model's ranking mode over every user with a `stage` target."""
    ranker = model.ranker
    total = len(split.targets(stage)) if users is None else len(users)
    bar = tqdm(total=total, desc="ranking mode", unit="user", disable=not progress, leave=False)

    def score_histories(histories: list[list[int]]) -> torch.Tensor:
        scores = ranker.rank(model, histories, batch_size=batch_size)
        bar.update(len(histories))
        return scores

    # the ranker batches its own LLM calls; evaluate_ranking's batches only bound the score matrix
    result = evaluate_ranking(history_scorer(split, stage, score_histories), split, stage, ks=(1, 5, 10, 20), batch_size=256, users=users)
    bar.close()
    return result


def retriever_result(retriever, split: Split, stage: str = "test", users: np.ndarray | None = None) -> RankingResult:
    """The retriever alone, on the same users and protocol."""
    return evaluate_ranking(history_scorer(split, stage, retriever.scores), split, stage, ks=(1, 5, 10, 20), batch_size=256, users=users)


def evaluation_users(split: Split, stage: str, limit: int | None, seed: int = 0) -> np.ndarray | None:
    """All users with a target (None) or a seeded sample of `limit` of them, the same for every model."""
    users = split.targets(stage)["user"].to_numpy()
    if not limit or limit >= len(users):
        return None
    return np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))


def ranking_report(model, split: Split, stage: str = "test", *, users: np.ndarray | None = None, progress: bool = True) -> tuple[dict, dict]:
    """Ranking mode next to its retriever alone on the same users, and where ranking mode loses:
    the target outside the candidates (the retriever's recall) or inside them but ranked low."""
    n = model.ranker.config.candidates
    ranked = evaluate_ranking_mode(model, split, stage, users=users, progress=progress)
    retrieved = retriever_result(model.ranker.retriever, split, stage, users=users)
    inside = retrieved.ranks < n
    report = {
        "users": len(ranked.ranks),
        "candidates": n,
        "ranking_mode": ranked.metrics,
        "retriever": retrieved.metrics,
        "retriever_recall": float(inside.mean()),
        "hits_in_candidates_ranking_mode_HR@10": float((ranked.ranks[inside] < 10).mean()) if inside.any() else float("nan"),
        "hits_in_candidates_retriever_HR@10": float((retrieved.ranks[inside] < 10).mean()) if inside.any() else float("nan"),
    }
    per_example = {"user": ranked.users.tolist(), "rank_ranking_mode": ranked.ranks.tolist(), "rank_retriever": retrieved.ranks.tolist()}
    return report, per_example
