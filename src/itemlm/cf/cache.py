"""MF vectors for a recipe: tuned on validation when asked, trained once, cached by split and data."""

from __future__ import annotations

from pathlib import Path

from itemlm.cf.mf import CFEmbeddings, MFConfig, mf_folder, train_mf
from itemlm.cf.tune import tuned_config
from itemlm.data.splits import Split
from itemlm.errors import InputError


def load_or_train_mf(
    split: Split, config: MFConfig, *, dataset: str, home: str | Path | None = None, folder: str | Path | None = None
) -> tuple[CFEmbeddings, Path]:
    """MF embeddings for a dataset, trained once and cached in `mf_folder`.

    `folder` names embeddings to load as they are (a user's own CF model). Otherwise the cache is
    keyed by the config, the split and a hash of the training interactions, so vectors fitted on
    another split (whose training data may hold this split's test period) are never reused.
    """
    if folder is not None:
        return check_fits(CFEmbeddings.from_pretrained(folder), split, dataset, Path(folder)), Path(folder)
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


def check_fits(embeddings: CFEmbeddings, split: Split, dataset: str, folder: Path) -> CFEmbeddings:
    """`embeddings` when they have a vector for every user and item of `split` and were fitted on
    its training data (or do not say what they were fitted on); an InputError otherwise."""
    if embeddings.user_vectors.shape[0] != split.num_users or embeddings.item_vectors.shape[0] != split.num_items:
        raise InputError(
            f"embeddings of {embeddings.user_vectors.shape[0]} users and {embeddings.item_vectors.shape[0]} items do not match "
            f"dataset '{dataset}' ({split.num_users} users, {split.num_items} items); retrain them", path=folder,
        )
    if embeddings.train_fingerprint and embeddings.train_fingerprint != split.fingerprint():
        raise InputError(
            f"embeddings were fitted on other data than this split of '{dataset}' (they may have seen its targets); retrain them",
            path=folder,
        )
    return embeddings
