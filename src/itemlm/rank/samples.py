"""Ranking-mode examples: a user's history, the retriever's candidates and which one came next.

Training rows come from the validation stage: the history is the user's training sequence, the
answer the validation item, which the retriever never saw as a target for that user (candidates
for training positions are flattered by a retriever fitted on them). Only rows whose answer is
among the candidates teach anything, so the others are dropped for training. More rows, for the
bridge only, come from the last training positions of each sequence (`position_samples`); the
validation rows then calibrate the head (`Ranker.calibrate`). The same builder gives the test
stage (history = training + validation items) for evaluation, every user kept.
"""

from __future__ import annotations

import numpy as np

from itemlm.data.splits import Split
from itemlm.rank.ranker import LABELS, RankingConfig, ranking_prompt
from itemlm.rank.retriever import Retriever
from itemlm.tasks.sample import Sample


def stage_histories(split: Split, stage: str) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """(users, their histories before the stage's target, the targets) for every user with a target."""
    targets = split.targets(stage)
    before = split.histories_before(stage)
    users = targets["user"].to_numpy()
    return users, [before[user].tolist() for user in users.tolist()], targets["item"].to_numpy()


def ranking_samples(
    split: Split, retriever: Retriever, stage: str, config: RankingConfig, domain: str = "movies", *, only_hits: bool = False,
) -> list[Sample]:
    """One ranking sample per user with a `stage` target; `only_hits`: those whose answer was retrieved."""
    users, histories, targets = stage_histories(split, stage)
    return rows_for(users, histories, targets, retriever, config, domain, only_hits=only_hits)


def position_histories(split: Split, positions: int) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """(users, histories, targets) at each user's last `positions` training positions: the item
    there is the target, what came before it the history (a user's first item is never a target)."""
    users, histories, targets = [], [], []
    for user, sequence in enumerate(split.train_sequences()):
        items = sequence.tolist()
        for t in range(max(1, len(items) - positions), len(items)):
            users.append(user)
            histories.append(items[:t])
            targets.append(items[t])
    return np.asarray(users, dtype=np.int64), histories, np.asarray(targets, dtype=np.int64)


def position_samples(split: Split, retriever: Retriever, config: RankingConfig, domain: str = "movies") -> list[Sample]:
    """Training rows from the last `config.train_positions` training positions of each user whose
    answer the retriever proposes. The retriever was fitted on these very sequences, so its
    candidates here are easier than at test time: rows for the bridge to learn to read a history
    and its candidates from, not for weighing the LLM against the retriever (`calibrate` does that
    on validation rows)."""
    users, histories, targets = position_histories(split, config.train_positions)
    return rows_for(users, histories, targets, retriever, config, domain, only_hits=True)


def rows_for(
    users: np.ndarray, histories: list[list[int]], targets: np.ndarray, retriever: Retriever, config: RankingConfig, domain: str,
    *, only_hits: bool,
) -> list[Sample]:
    samples = []
    for start in range(0, len(users), 512):
        rows = slice(start, start + 512)
        items, scores = retriever.candidates(histories[rows], config.candidates)
        for user, history, target, cands, cand_scores in zip(users[rows], histories[rows], targets[rows], items.tolist(), scores.tolist()):
            position = cands.index(target) if target in cands else None
            if only_hits and position is None:
                continue
            samples.append(Sample(
                task="ranking", template="ranking", prompt=ranking_prompt(history[-config.history :], cands, domain),
                target=LABELS[position] if position is not None else "", user=int(user), target_item=int(target),
                candidates=tuple(cands), candidate_scores=tuple(cand_scores),
            ))
    return samples
