"""MF vectors for a recipe: tuned on validation when asked, trained once, cached by split and data."""

from __future__ import annotations

from pathlib import Path

from itemlm.cf.mf import CFEmbeddings, MFConfig, mf_folder, train_mf
from itemlm.cf.tune import tuned_config
from itemlm.data.splits import Split


def load_or_train_mf(
    split: Split, config: MFConfig, *, dataset: str, home: str | Path | None = None, folder: str | Path | None = None
) -> tuple[CFEmbeddings, Path]:
    """MF embeddings for a dataset, trained once and cached in `mf_folder`.

    `folder` names embeddings to load as they are (a user's own CF model). Otherwise the cache is
    keyed by the config, the split and a hash of the training interactions, so vectors fitted on
    another split (whose training data may hold this split's test period) are never reused.
    """
    if folder is not None:
        return CFEmbeddings.from_pretrained(folder), Path(folder)
    if config.tuned:
        config = tuned_config(split, config, dataset=dataset, home=home)
    cache = mf_folder(split, config, dataset=dataset, home=home)
    if (cache / "embeddings.safetensors").exists():
        cached = CFEmbeddings.from_pretrained(cache)
        if cached.config.cache_key() == config.cache_key() and cached.train_fingerprint == split.fingerprint():
            return cached, cache
    embeddings = train_mf(split, config, dataset=dataset)
    embeddings.save_pretrained(cache)
    return embeddings, cache
