import pytest

from itemlm.data.splits import leave_one_out_split, make_split, temporal_split
from itemlm.errors import InputError


def test_leave_one_out_on_known_sequences(tiny_dataset):
    split = leave_one_out_split(tiny_dataset)
    title = tiny_dataset.items["title"].to_numpy()
    user = {uid: i for i, uid in enumerate(tiny_dataset.users["user_id"])}
    valid = dict(zip(split.valid["user"], title[split.valid["item"]]))
    test = dict(zip(split.test["user"], title[split.test["item"]]))
    assert (valid[user["u1"]], test[user["u1"]]) == ("D", "E")
    assert (valid[user["u2"]], test[user["u2"]]) == ("E", "B")
    assert user["u3"] not in valid and user["u3"] not in test  # two interactions: training only
    assert len(split.train) == 11 - 4


def test_leave_one_out_has_no_leakage(ml100k):
    split = leave_one_out_split(ml100k)
    inter = ml100k.interactions
    last_time = inter.groupby("user")["timestamp"].max()
    train_max = split.train.groupby("user")["timestamp"].max()
    # Every target comes at or after the user's last training interaction ...
    for targets in (split.valid, split.test):
        merged = targets.merge(inter, on=["user", "item"])
        assert (merged["timestamp"].to_numpy() >= train_max[merged["user"]].to_numpy()).all()
    # ... the test target is the user's very last interaction ...
    test_times = split.test.merge(inter, on=["user", "item"]).set_index("user")["timestamp"]
    assert (test_times == last_time[test_times.index]).all()
    # ... and no (user, item) target pair appears in training.
    train_pairs = set(zip(split.train["user"], split.train["item"]))
    for targets in (split.valid, split.test):
        assert not train_pairs & set(zip(targets["user"], targets["item"]))
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter)
    assert split.train_matrix().sum() == len(split.train)


def test_seen_matrix_for_test_includes_the_validation_target(ml100k):
    split = leave_one_out_split(ml100k)
    seen = split.seen_matrix("test")
    u, i = int(split.valid["user"][0]), int(split.valid["item"][0])
    assert seen[u, i] == 1 and split.seen_matrix("valid")[u, i] == 0


def test_train_sequences_are_in_time_order(tiny_dataset):
    split = leave_one_out_split(tiny_dataset)
    title = tiny_dataset.items["title"].to_numpy()
    assert [list(title[s]) for s in split.train_sequences()] == [["A", "B", "C"], ["C", "A"], ["A", "D"]]


def test_temporal_split_puts_training_strictly_before_evaluation(ml100k):
    split = temporal_split(ml100k, 0.1, 0.1)
    train_max = split.train["timestamp"].max()
    inter = ml100k.interactions
    for targets in (split.valid, split.test):
        times = targets.merge(inter, on=["user", "item"])["timestamp"]
        assert (times > train_max).all() or (times >= train_max).all() and len(times)
        assert targets["user"].is_unique
    assert len(split.train) == pytest.approx(0.8 * len(inter), rel=0.02)


def test_unknown_split_name():
    with pytest.raises(InputError, match="leave-one-out"):
        make_split(None, "random")


@pytest.mark.parametrize("strategy", ["leave-one-out", "temporal"])
def test_histories_before_the_target_hold_exactly_the_seen_items_in_time_order(ml100k, strategy):
    split = make_split(ml100k, strategy)
    inter = ml100k.interactions
    full = {u: list(group["item"]) for u, group in inter.groupby("user")}
    for stage in ("valid", "test"):
        histories, seen = split.histories_before(stage), split.seen_matrix(stage)
        for user, target in zip(split.targets(stage)["user"].tolist()[:200], split.targets(stage)["item"].tolist()[:200]):
            history = histories[user].tolist()
            assert sorted(history) == sorted(seen[user].indices.tolist())  # what every evaluator leaves out
            assert history == full[user][: len(history)]  # a prefix of the user's own sequence, in time order
            assert full[user][len(history)] == target  # and the target comes right after it
    with pytest.raises(InputError, match="'valid' or 'test'"):
        split.histories_before("train")
