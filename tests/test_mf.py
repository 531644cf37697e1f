import dataclasses
import shutil

import numpy as np
import pytest

from itemlm.cf import cache as mf_cache
from itemlm.cf import mf
from itemlm.cf.cache import load_or_train_mf
from itemlm.cf.mf import CFEmbeddings, MFConfig, train_mf
from itemlm.cf.mostpop import MostPopular
from itemlm.data.splits import leave_one_out_split, temporal_split
from itemlm.errors import InputError
from itemlm.cf.evaluate import evaluate_ranking


@pytest.fixture(scope="module")
def split(ml100k):
    return leave_one_out_split(ml100k)


@pytest.fixture(scope="module")
def als(split):
    return train_mf(split, MFConfig(algorithm="als", seed=0))


def test_mf_beats_mostpop_on_ml100k(split, als):
    mostpop = evaluate_ranking(MostPopular(split).score, split, "test").metrics
    mf = evaluate_ranking(als.score, split, "test").metrics
    assert mf["HR@10"] > mostpop["HR@10"] * 1.2
    assert mf["NDCG@10"] > mostpop["NDCG@10"] * 1.2


def test_users_and_items_share_one_space(split, als):
    assert als.user_vectors.shape == (943, 64) and als.item_vectors.shape == (1682, 64)
    assert als.user_vectors.dtype == np.float32


def test_als_is_deterministic_with_a_seed(split, als):
    again = train_mf(split, MFConfig(algorithm="als", seed=0))
    np.testing.assert_allclose(again.item_vectors, als.item_vectors, rtol=1e-5, atol=1e-6)


def test_bpr_trains_and_carries_a_bias_column(split):
    bpr = train_mf(split, MFConfig(algorithm="bpr", factors=16, iterations=5))
    assert bpr.item_vectors.shape == (1682, 17)
    np.testing.assert_allclose(bpr.user_vectors[:, -1], 1.0)
    # asked for threads (as a tuned config passes them on), BPR still fits on one: the vectors repeat exactly
    threaded = train_mf(split, MFConfig(algorithm="bpr", factors=16, iterations=5, num_threads=2))
    np.testing.assert_array_equal(threaded.item_vectors, bpr.item_vectors)


def test_save_and_load_are_exact(tmp_path, als):
    loaded = CFEmbeddings.from_pretrained(als.save_pretrained(tmp_path / "mf"))
    assert np.array_equal(loaded.item_vectors, als.item_vectors)
    assert np.array_equal(loaded.user_vectors, als.user_vectors)
    assert loaded.config == als.config


def test_bad_config_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(InputError, match="als"):
        MFConfig(algorithm="svd")
    with pytest.raises(InputError, match="cf train"):
        CFEmbeddings.from_pretrained(tmp_path)


def test_one_changed_training_interaction_changes_the_cache(clustered_dataset, tmp_path, monkeypatch):
    split = leave_one_out_split(clustered_dataset)
    config = MFConfig(factors=8, iterations=3, num_threads=1)
    first, folder = load_or_train_mf(split, config, dataset="clustered", home=tmp_path)
    fits = []
    monkeypatch.setattr(mf_cache, "train_mf", lambda *a, **k: fits.append(1) or train_mf(*a, **k))
    _, again = load_or_train_mf(split, dataclasses.replace(config, num_threads=2), dataset="clustered", home=tmp_path)
    assert again == folder and fits == []

    train = split.train.copy()
    train.loc[0, "item"] = (train.loc[0, "item"] + 1) % split.num_items
    changed = dataclasses.replace(split, train=train)
    retrained, other = load_or_train_mf(changed, config, dataset="clustered", home=tmp_path)
    assert other != folder and fits == [1]
    assert retrained.train_fingerprint == changed.fingerprint() != first.train_fingerprint


def test_a_temporal_split_never_reuses_leave_one_out_vectors(clustered_dataset, tmp_path, monkeypatch):
    config = MFConfig(factors=8, iterations=3, num_threads=1)
    loo = leave_one_out_split(clustered_dataset)
    temporal = temporal_split(clustered_dataset)
    _, loo_folder = load_or_train_mf(loo, config, dataset="clustered", home=tmp_path)
    vectors, folder = load_or_train_mf(temporal, config, dataset="clustered", home=tmp_path)
    assert folder != loo_folder and "temporal" in folder.parent.name
    assert vectors.split == "temporal" and vectors.train_fingerprint == temporal.fingerprint()

    # a leave-one-out model planted where the temporal one lives is recognised and refitted
    shutil.rmtree(folder)
    shutil.copytree(loo_folder, folder)
    fits = []
    monkeypatch.setattr(mf_cache, "train_mf", lambda *a, **k: fits.append(1) or train_mf(*a, **k))
    refitted, _ = load_or_train_mf(temporal, config, dataset="clustered", home=tmp_path)
    assert fits == [1] and refitted.train_fingerprint == temporal.fingerprint()


def test_configs_that_differ_only_in_spelling_share_a_cache(clustered_dataset, tmp_path):
    split = leave_one_out_split(clustered_dataset)
    folder = mf.mf_folder(split, MFConfig(alpha=10), dataset="clustered", home=tmp_path)
    assert folder == mf.mf_folder(split, MFConfig(alpha=10.0, num_threads=1, tuned=True), dataset="clustered", home=tmp_path)
    assert folder != mf.mf_folder(split, MFConfig(alpha=10.5), dataset="clustered", home=tmp_path)
