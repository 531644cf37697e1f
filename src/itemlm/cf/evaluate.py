"""Full-catalogue ranking metrics: HR@K and NDCG@K with one target item per evaluated user.

Every item in the catalogue is scored (no sampled negatives), items the user already consumed are
removed from the ranking (unless `exclude_seen=False`), and the target's rank is what a top-K list
sorted by (score descending, item index ascending) would show: ties are broken by item index, never
in the target's favour by accident. With one relevant item, HR@K = [rank < K] and
NDCG@K = 1 / log2(rank + 2) when rank < K.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from itemlm.data.splits import Split
from itemlm.errors import InputError

DEFAULT_KS = (1, 5, 10, 20)

ScoreFn = Callable[[np.ndarray], torch.Tensor]
"""Maps a batch of user indices [B] to scores over the whole catalogue [B, num_items]."""


@dataclass
class RankingResult:
    metrics: dict[str, float]
    ranks: np.ndarray  # 0-based rank of each target, in target order
    users: np.ndarray
    num_items: int
    ks: tuple[int, ...] = field(default=DEFAULT_KS)

    def per_example(self, k: int) -> dict[str, np.ndarray]:
        """Per-target HR@k and NDCG@k, for paired significance tests between models."""
        hit = self.ranks < k
        return {"hr": hit.astype(np.float64), "ndcg": np.where(hit, 1.0 / np.log2(self.ranks + 2.0), 0.0)}


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    metrics: dict[str, float] = {}
    count = max(1, len(ranks))
    for k in ks:
        hit = ranks < k
        metrics[f"HR@{k}"] = float(hit.sum() / count)
        metrics[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).sum() / count)
    metrics["MRR"] = float((1.0 / (ranks + 1.0)).sum() / count)
    metrics["users"] = float(len(ranks))
    return metrics


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, seen_rows: list[np.ndarray] | None) -> torch.Tensor:
    """0-based rank of each target among all items, after removing each row's seen items.

    A target the user had consumed before (a repeat) keeps its own score and is still ranked.
    """
    scores = scores.float().clone()
    if torch.isnan(scores).any():  # a NaN target would rank first, a NaN rival never ahead: the metrics would lie
        bad = int(torch.isnan(scores).any(1).sum())
        raise InputError(f"the scores hold NaN for {bad} of {len(scores)} users: the model diverged (try a lower learning rate)")
    rows = torch.arange(len(targets))
    target_score = scores[rows, targets].clone()
    if seen_rows is not None and any(len(s) for s in seen_rows):
        row_index = np.repeat(np.arange(len(seen_rows)), [len(s) for s in seen_rows])
        col_index = np.concatenate(seen_rows)
        scores[torch.as_tensor(row_index, dtype=torch.long), torch.as_tensor(col_index, dtype=torch.long)] = -math.inf
        scores[rows, targets] = target_score
    ahead = (scores > target_score[:, None]).sum(1)
    item_index = torch.arange(scores.shape[1])
    tied_before = ((scores == target_score[:, None]) & (item_index[None, :] < targets[:, None])).sum(1)
    return ahead + tied_before


def evaluate_ranking(
    score_fn: ScoreFn,
    split: Split,
    stage: str = "test",
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    exclude_seen: bool = True,
    batch_size: int = 2048,
    progress: bool = False,
    description: str = "ranking",
    users: np.ndarray | None = None,
) -> RankingResult:
    """Rank the whole catalogue for every user with a target in `stage` (or those of them in
    `users`) and compute HR/NDCG@K."""
    targets = split.targets(stage)
    if users is not None:
        targets = targets[targets["user"].isin(np.asarray(users))]
    users = targets["user"].to_numpy()
    items = targets["item"].to_numpy()
    seen = split.seen_matrix(stage) if exclude_seen else None
    ranks = np.empty(len(users), dtype=np.int64)
    starts = range(0, len(users), batch_size)
    for start in tqdm(starts, desc=description, disable=not progress, unit="batch"):
        batch_users = users[start : start + batch_size]
        batch_items = torch.tensor(items[start : start + batch_size], dtype=torch.long)
        with torch.no_grad():
            scores = score_fn(batch_users)
        seen_rows = None
        if seen is not None:
            seen_rows = seen_csr_rows(seen, batch_users)
        ranks[start : start + len(batch_users)] = target_ranks(scores, batch_items, seen_rows).numpy()
    return RankingResult(metrics=metrics_from_ranks(ranks, ks), ranks=ranks, users=users, num_items=split.num_items, ks=ks)


def seen_csr_rows(matrix: sp.csr_matrix, users: np.ndarray) -> list[np.ndarray]:
    return [matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]] for u in users]
