import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from itemlm.cf import cache as mf_cache
from itemlm.cf import mf, tune
from itemlm.cf.cache import load_or_train_mf
from itemlm.cf.mf import MFConfig, train_mf
from itemlm.cf.tune import choose, tune_mf
from itemlm.data.splits import leave_one_out_split
from itemlm.errors import InputError
from itemlm.cf.evaluate import evaluate_ranking

from tests.conftest import clustered_rows

SMALL_GRID = {"factors": [8], "regularization": [0.1, 1.0], "alpha": [1.0, 10.0], "iterations": [3]}


def row(factors, hr, ndcg=0.05, users=943):
    config = MFConfig(factors=factors).cache_key()
    return {"config": config, "valid": {"HR@10": hr, "NDCG@10": ndcg, "users": users}, "seconds": 0.0}


def test_choose_takes_the_best_validation_score_then_ndcg():
    assert choose([row(64, 0.10), row(64, 0.16), row(64, 0.12)]) == 1
    assert choose([row(64, 0.16, 0.07), row(64, 0.16, 0.08)]) == 1


def test_choose_prefers_fewer_factors_only_within_one_standard_error():
    # one standard error of 0.163 on 943 users is 0.012
    assert choose([row(128, 0.163), row(64, 0.155)]) == 1
    assert choose([row(128, 0.163), row(64, 0.145)]) == 0
    assert choose([row(128, 0.163, users=100_000), row(64, 0.160, users=100_000)]) == 0


def test_a_tiny_grid_picks_the_best_validation_config_without_reading_test(clustered_dataset, tmp_path):
    split = leave_one_out_split(clustered_dataset)
    result = tune_mf(split, ["als"], dataset="clustered", home=tmp_path, grids={"als": SMALL_GRID}, progress=False)
    assert len(result.rows) == 4
    scores = []
    for config in tune.grid_configs("als", SMALL_GRID, num_threads=1):
        metrics = evaluate_ranking(train_mf(split, config).score, split, "valid").metrics
        scores.append((metrics["HR@10"], metrics["NDCG@10"]))
    for got, (hr, ndcg) in zip(result.rows, scores):
        assert (got["valid"]["HR@10"], got["valid"]["NDCG@10"]) == pytest.approx((hr, ndcg))
    assert len({hr for hr, _ in scores}) > 1  # the grid points differ
    best = max(range(4), key=lambda i: (scores[i], -i))
    assert result.best.cache_key() == result.rows[best]["config"]

    no_test = dataclasses.replace(split, test=split.test.iloc[0:0])
    again = tune_mf(no_test, ["als"], dataset="other", home=tmp_path, grids={"als": SMALL_GRID}, progress=False)
    assert again.rows == [{**r, "seconds": a["seconds"]} for r, a in zip(result.rows, again.rows)]


def test_the_grid_is_cached_by_the_training_data(clustered_dataset, tmp_path, monkeypatch):
    split = leave_one_out_split(clustered_dataset)
    first = tune_mf(split, ["als"], dataset="clustered", home=tmp_path, grids={"als": SMALL_GRID}, progress=False)
    runs = []
    real_run_grid = tune.run_grid
    monkeypatch.setattr(tune, "run_grid", lambda *a, **k: runs.append(1) or real_run_grid(*a, **k))
    again = tune_mf(split, ["als"], dataset="clustered", home=tmp_path, grids={"als": SMALL_GRID}, progress=False)
    assert runs == [] and again.rows == first.rows

    train = split.train.copy()
    train.loc[0, "item"] = (train.loc[0, "item"] + 1) % split.num_items  # one training interaction changed
    changed = dataclasses.replace(split, train=train)
    assert changed.fingerprint() != split.fingerprint()
    tune_mf(changed, ["als"], dataset="clustered", home=tmp_path, grids={"als": SMALL_GRID}, progress=False)
    assert runs == [1]
    assert len(list(tmp_path.glob("models/clustered/*/tune-als-*.json"))) == 2


def test_mf_tuned_uses_the_cached_choice(clustered_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(tune.GRIDS, "als", SMALL_GRID)
    split = leave_one_out_split(clustered_dataset)
    embeddings, folder = load_or_train_mf(split, MFConfig(tuned=True, num_threads=1), dataset="clustered", home=tmp_path)
    chosen = tune_mf(split, ["als"], dataset="clustered", home=tmp_path, progress=False).best
    assert embeddings.config.cache_key() == chosen.cache_key() and embeddings.config.tuned
    assert folder == mf.mf_folder(split, chosen, dataset="clustered", home=tmp_path)

    monkeypatch.setattr(tune, "run_grid", lambda *a, **k: pytest.fail("the grid ran again"))
    monkeypatch.setattr(mf_cache, "train_mf", lambda *a, **k: pytest.fail("the vectors were fitted again"))
    again, same = load_or_train_mf(split, MFConfig(tuned=True), dataset="clustered", home=tmp_path)
    assert same == folder and np.array_equal(again.item_vectors, embeddings.item_vectors)


def test_a_recipe_asks_for_tuned_vectors_with_an_override():
    from itemlm.config import load_config
    from itemlm.train.stage1 import Stage1Config

    assert load_config(Stage1Config, "stage1-quick", ["mf.tuned=true"]).mf.tuned is True
    assert load_config(Stage1Config, "stage1-quick").mf.tuned is False


def test_bad_requests_are_input_errors(clustered_dataset, tmp_path):
    split = leave_one_out_split(clustered_dataset)
    with pytest.raises(InputError, match="svd"):
        tune_mf(split, ["als", "svd"], dataset="clustered", home=tmp_path)
    with pytest.raises(InputError, match="validation"):
        tune_mf(dataclasses.replace(split, valid=split.valid.iloc[0:0]), ["als"], dataset="clustered", home=tmp_path)


def run(*args, home):
    return subprocess.run(
        [sys.executable, "-m", "itemlm.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={"ITEMLM_HOME": str(home), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


def test_cli_tune_and_train_write_what_the_recipes_read(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    sequences: dict[str, list[str]] = {}
    for user, item, _ in clustered_rows():
        sequences.setdefault(user[1:], []).append(item[1:])
    (source / "user_sequence.txt").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in sequences.items()))
    assert run("data", "prepare", "tiny", "--source", str(source), home=tmp_path).returncode == 0

    tuned = run("cf", "tune", "tiny", "--algorithms", "als", "--threads", "1", home=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    assert "chosen" in tuned.stdout and "test" in tuned.stdout
    cache = list(tmp_path.glob("models/tiny/leave-one-out-*/tune-als-s0-*.json"))
    assert len(cache) == 1 and len(json.loads(cache[0].read_text())["rows"]) == 24

    bad = run("cf", "tune", "tiny", "--algorithms", "als,svd", home=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "svd" in bad.stderr

    trained = run("cf", "train", "tiny", "--iterations", "5", "--threads", "1", home=tmp_path)
    assert trained.returncode == 0, trained.stderr
    from itemlm.data.prepare import load_dataset

    split = leave_one_out_split(load_dataset("tiny", tmp_path))
    monkeypatch.setattr(mf_cache, "train_mf", lambda *a, **k: pytest.fail("cf train wrote another folder"))
    _, folder = load_or_train_mf(split, MFConfig(iterations=5), dataset="tiny", home=tmp_path)
    assert str(folder) in trained.stdout.replace("\n", "")
