"""Stage 2 feeds a pre-trained Q-Former only the CF vectors stage 1 trained it on."""

import json

import numpy as np
import pytest

from itemlm.cf.identity import FILE, check_same_cf, write_cf_identity
from itemlm.cf.mf import CFEmbeddings, MFConfig
from itemlm.errors import InputError


def vectors(config: MFConfig, dim: int = 4, fingerprint: str = "abc") -> CFEmbeddings:
    rng = np.random.default_rng(0)
    return CFEmbeddings(rng.normal(size=(3, dim)).astype(np.float32), rng.normal(size=(5, dim)).astype(np.float32),
                        config, dataset="ml-100k", split="leave-one-out", train_fingerprint=fingerprint)


def test_the_same_vectors_pass_and_any_other_factorization_is_refused_with_both_named(tmp_path):
    default = MFConfig(factors=4)
    write_cf_identity(tmp_path, vectors(default))
    assert json.loads((tmp_path / FILE).read_text())["mf"]["regularization"] == 0.05
    check_same_cf(tmp_path, vectors(MFConfig(factors=4, num_threads=1)))  # the thread count decides nothing
    check_same_cf(tmp_path, vectors(MFConfig(factors=4, tuned=True)))  # tuned to the same settings: the same vectors
    tuned = MFConfig(factors=4, iterations=15, regularization=1.0, alpha=1.0, tuned=True)
    with pytest.raises(InputError, match=r"pre-trained on other CF vectors \(als on ml-100k \(factors 4, iterations 30, "
                                         r"regularization 0.05, alpha 2.0\)\) than this run reads \(als on ml-100k \(factors 4, iterations 15"):
        check_same_cf(tmp_path, vectors(tuned))
    with pytest.raises(InputError, match="mf.tuned=true in each"):
        check_same_cf(tmp_path, vectors(default, fingerprint="other training data"))
    with pytest.raises(InputError, match=FILE):  # the error names the record it read
        check_same_cf(tmp_path, vectors(MFConfig(factors=8), dim=8))


def test_a_model_without_the_record_is_read_with_a_warning(tmp_path, capsys):
    check_same_cf(tmp_path, vectors(MFConfig(factors=4)))
    assert "cannot check" in capsys.readouterr().err


def test_a_users_own_cf_model_must_fit_the_dataset_and_its_training_data(tmp_path, tiny_dataset):
    from itemlm.cf.cache import load_or_train_mf
    from itemlm.cf.mf import train_mf
    from itemlm.data.splits import leave_one_out_split

    split = leave_one_out_split(tiny_dataset)
    fitted = train_mf(split, MFConfig(factors=4, iterations=2), dataset="tiny")
    fitted.save_pretrained(tmp_path / "mine")
    loaded, folder = load_or_train_mf(split, MFConfig(), dataset="tiny", folder=tmp_path / "mine")
    assert folder == tmp_path / "mine" and np.array_equal(loaded.item_vectors, fitted.item_vectors)
    short = CFEmbeddings(fitted.user_vectors, fitted.item_vectors[:-1], fitted.config, "tiny", "leave-one-out", fitted.train_fingerprint)
    short.save_pretrained(tmp_path / "short")
    with pytest.raises(InputError, match=r"short: embeddings of \d+ users and \d+ items do not match dataset 'tiny'"):
        load_or_train_mf(split, MFConfig(), dataset="tiny", folder=tmp_path / "short")
    other = CFEmbeddings(fitted.user_vectors, fitted.item_vectors, fitted.config, "tiny", "leave-one-out", "fitted on the test period")
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match="fitted on other data than this split of 'tiny'"):
        load_or_train_mf(split, MFConfig(), dataset="tiny", folder=tmp_path / "other")
