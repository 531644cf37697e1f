import numpy as np
import pytest

from itemlm.cf.mf import CFEmbeddings, MFConfig, train_mf
from itemlm.cf.mostpop import MostPopular
from itemlm.data.splits import leave_one_out_split
from itemlm.errors import InputError
from itemlm.eval.ranking import evaluate_ranking


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
