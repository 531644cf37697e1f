"""Consensus decoding: the candidate the others agree with most, chosen per prompt."""

import numpy as np
import pytest

from itemlm.models.consensus import choose_consensus, consensus_index


def unit(*rows):
    vectors = np.array(rows, dtype=float)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_candidate_between_the_others_wins():
    # two far-apart answers and one between them: the middle one is closest to both
    assert consensus_index(unit([1, 0], [0, 1], [1, 1])) == 2
    # an outlier never wins against a tight pair
    assert consensus_index(unit([1, 0.1], [-1, 0], [1, 0])) in (0, 2)
    assert consensus_index(unit([1, 0.1], [-1, 0], [1, 0])) != 1


def test_ties_keep_the_first_candidate_and_one_candidate_is_kept():
    assert consensus_index(unit([1, 0], [1, 0], [1, 0])) == 0  # the greedy answer comes first
    assert consensus_index(unit([0, 1])) == 0
    with pytest.raises(ValueError, match="no candidates"):
        consensus_index(np.zeros((0, 2)))


def test_each_prompt_chooses_among_its_own_candidates():
    directions = {"a": [1, 0], "b": [0, 1], "ab": [1, 1], "c": [-1, 0], "bc": [-1, 1]}
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return unit(*[directions[t] for t in texts])

    assert choose_consensus([["a", "b", "ab"], ["bc", "b", "c"]], embed) == ["ab", "bc"]
    assert len(calls) == 1  # every candidate embedded in one call
    assert choose_consensus([], embed) == []
