"""Ranking-mode examples: a user's history, the retriever's candidates and which one came next.

Training rows come from the validation stage: the history is the user's training sequence, the
answer the validation item, which the retriever never saw as a target for that user (candidates
for training positions would be flattered by a retriever fitted on them). Only rows whose answer
is among the candidates teach anything, so the others are dropped for training. The same builder
gives the test stage (history = training + validation items) for evaluation, every user kept.
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
    sequences = split.train_sequences()
    valid_item = dict(zip(split.valid["user"].tolist(), split.valid["item"].tolist()))
    users = targets["user"].to_numpy()
    histories = []
    for user in users.tolist():
        history = sequences[user].tolist()
        if stage == "test" and user in valid_item:
            history.append(valid_item[user])
        histories.append(history)
    return users, histories, targets["item"].to_numpy()


def ranking_samples(
    split: Split, retriever: Retriever, stage: str, config: RankingConfig, domain: str = "movies", *, only_hits: bool = False,
) -> list[Sample]:
    """One ranking sample per user with a `stage` target; `only_hits`: those whose answer was retrieved."""
    users, histories, targets = stage_histories(split, stage)
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
