"""The SC metric: cosine similarity of generated and reference text under a sentence encoder
(`itemlm.models.sentence_encoder`: all-MiniLM-L6-v2 by default, offline)."""

from __future__ import annotations

import numpy as np

from itemlm.models.sentence_encoder import embed_sentences


def semantic_similarity(generated: list[str], references: list[str], encoder: str | None = None) -> np.ndarray:
    """Per-pair cosine similarity in [-1, 1]."""
    if len(generated) != len(references):
        raise ValueError("generated and references must have the same length")
    if not generated:
        return np.zeros(0)
    return (embed_sentences(generated, encoder) * embed_sentences(references, encoder)).sum(axis=1)
