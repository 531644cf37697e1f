import math

import numpy as np
import pandas as pd
import pytest
import torch

from itemlm.data.splits import Split
from itemlm.cf.evaluate import evaluate_ranking, metrics_from_ranks, target_ranks


def make_split(train_pairs, test_pairs, num_users, num_items):
    train = pd.DataFrame(train_pairs, columns=["user", "item"])
    train["timestamp"] = 0
    train["rating"] = np.nan
    test = pd.DataFrame(test_pairs, columns=["user", "item"])
    return Split(train, test.iloc[:0], test, num_users, num_items, "manual")


def test_rank_counts_better_items_and_ties_before_the_target():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1, 0.5]])
    assert target_ranks(scores, torch.tensor([2]), None).item() == 2  # 0.9 ahead, item 1 tied earlier
    assert target_ranks(scores, torch.tensor([1]), None).item() == 1
    assert target_ranks(scores, torch.tensor([3]), None).item() == 4


def test_nan_scores_are_an_error_not_a_hit():
    from itemlm.errors import InputError

    scores = torch.tensor([[0.9, float("nan"), 0.5], [0.1, 0.2, 0.3]])  # a NaN target would rank first
    with pytest.raises(InputError, match="NaN for 1 of 2 users"):
        target_ranks(scores, torch.tensor([1, 0]), None)


def test_seen_items_leave_the_ranking_but_a_repeated_target_stays():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    assert target_ranks(scores, torch.tensor([2]), [np.array([0, 1])]).item() == 0
    assert target_ranks(scores, torch.tensor([1]), [np.array([0, 1])]).item() == 0


def test_metrics_match_their_definitions():
    metrics = metrics_from_ranks(np.array([0, 3, 12]), ks=(1, 5, 10))
    assert metrics["HR@1"] == pytest.approx(1 / 3)
    assert metrics["HR@5"] == pytest.approx(2 / 3)
    assert metrics["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert metrics["HR@10"] == pytest.approx(2 / 3)


def test_vectorized_evaluation_equals_a_plain_loop():
    rng = np.random.default_rng(0)
    num_users, num_items = 50, 40
    scores = rng.integers(0, 5, size=(num_users, num_items)).astype(np.float32)  # many ties
    train = [(u, i) for u in range(num_users) for i in rng.choice(num_items, 6, replace=False)]
    test = [(u, int(rng.integers(num_items))) for u in range(num_users)]
    split = make_split(train, test, num_users, num_items)
    result = evaluate_ranking(lambda users: torch.from_numpy(scores[users]), split, "test", batch_size=7)
    seen = {u: set() for u in range(num_users)}
    for u, i in train:
        seen[u].add(i)
    expected = []
    for u, target in test:
        order = sorted(
            (i for i in range(num_items) if i == target or i not in seen[u]), key=lambda i: (-scores[u, i], i)
        )
        expected.append(order.index(target))
    assert result.ranks.tolist() == expected


def test_keep_seen_flag_ranks_consumed_items_too():
    split = make_split([(0, 0)], [(0, 1)], 1, 3)
    scores = lambda users: torch.tensor([[1.0, 0.5, 0.1]])
    assert evaluate_ranking(scores, split, "test").ranks[0] == 0
    assert evaluate_ranking(scores, split, "test", exclude_seen=False).ranks[0] == 1
