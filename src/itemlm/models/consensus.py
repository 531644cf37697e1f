"""Consensus decoding: of several answers to one prompt, keep the one the others agree with most.

This is minimum-Bayes-risk decoding with the SC metric's own similarity as the utility. The model
answers greedily and samples `n` more answers; each candidate's expected similarity to the answer
the reference could be is estimated by its mean cosine to the other candidates under the sentence
encoder, and the candidate with the highest mean wins (ties: the earliest, so the greedy answer).
A greedy answer is the single most likely path, often a specific invented detail; the consensus
is the answer most of the model's plausible answers share.
Measured on the bench's primary ILM (docs/benchmarks.md, "Consensus decoding").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

SAMPLING = {"temperature": 0.8, "top_p": 0.95}  # how the extra answers are drawn


def consensus_index(embeddings: np.ndarray) -> int:
    """The row of (candidates, dim) unit vectors with the highest mean cosine to the other rows."""
    if len(embeddings) == 0:
        raise ValueError("no candidates to choose from")
    if len(embeddings) == 1:
        return 0
    similarity = embeddings @ embeddings.T
    support = (similarity.sum(axis=1) - np.diag(similarity)) / (len(embeddings) - 1)
    return int(np.argmax(support))  # the first of equal ones


def choose_consensus(candidates: Sequence[Sequence[str]], embed: Callable[[list[str]], np.ndarray]) -> list[str]:
    """One answer per prompt from its candidates (greedy answer first), embedding them all at once."""
    flat = [text for group in candidates for text in group]
    if not flat:
        return []
    vectors, chosen, start = embed(flat), [], 0
    for group in candidates:
        chosen.append(group[consensus_index(vectors[start : start + len(group)])])
        start += len(group)
    return chosen
