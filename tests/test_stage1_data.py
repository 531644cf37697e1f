import numpy as np
import pytest

from itemlm.data.splits import leave_one_out_split
from itemlm.data.stage1_data import Stage1Data, consecutive_item_pairs, user_item_pairs
from itemlm.data.text_views import build_text_views, display_title
from itemlm.models.qformer import load_tokenizer


@pytest.fixture(scope="module")
def split(ml100k):
    return leave_one_out_split(ml100k)


def test_item_pairs_are_consecutive_training_items_only(ml100k, split):
    pairs = consecutive_item_pairs(split)
    held_back = set(zip(split.valid["user"], split.valid["item"])) | set(zip(split.test["user"], split.test["item"]))
    sequences = split.train_sequences()
    consecutive = {(int(a), int(b)) for seq in sequences for a, b in zip(seq[:-1], seq[1:])}
    assert {(int(a), int(b)) for a, b in pairs} <= consecutive
    # No pair touches a user's validation or test target through that user's sequence.
    target_items_by_user = {}
    for u, i in held_back:
        target_items_by_user.setdefault(u, set()).add(i)
    for user, seq in enumerate(sequences):
        assert not set(seq.tolist()) & target_items_by_user.get(user, set())
    assert len(pairs) > 90_000


def test_user_pairs_are_training_interactions(split):
    pairs = {tuple(p) for p in user_item_pairs(split).tolist()}
    assert not pairs & set(zip(split.test["user"].tolist(), split.test["item"].tolist()))
    assert not pairs & set(zip(split.valid["user"].tolist(), split.valid["item"].tolist()))
    assert len(pairs) == len(split.train)


def test_text_views_cover_metadata_and_description():
    row = {"title": "Heat", "year": "1995", "genres": "Action, Crime", "description": "One. Two. Three."}
    views = build_text_views(__import__("pandas").DataFrame([row]))[0]
    assert views[0] == "Heat (1995). Action, Crime."
    assert any("One. Two." == v for v in views)
    assert len(set(views)) == len(views)
    assert display_title({"title": "", "year": ""}) == "an untitled item"


def test_batches_are_a_pure_function_of_the_step_and_skip_held_out_text(ml100k, split):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(ml100k.num_items, 8)).astype(np.float32)
    users = rng.normal(size=(ml100k.num_users, 8)).astype(np.float32)
    tokenizer = load_tokenizer()
    make = lambda: Stage1Data(ml100k, split, users, vectors, tokenizer, batch_size=16, with_item_pairs=True, with_user_pairs=True)
    first, second = make(), make()
    held_out = set(np.flatnonzero(ml100k.items["text_held_out"].to_numpy()))
    seen_items = set()
    for step in range(first.steps_per_epoch):
        a, b = first.batch(step), second.batch(step)
        assert (a.input_ids.shape == b.input_ids.shape) and bool((a.input_ids == b.input_ids).all())
        assert bool((a.ii[2] == b.ii[2]).all()) and bool((a.ui[3] == b.ui[3]).all())
        ids = set(a.item_ids.tolist())
        assert len(ids) == 16 and not ids & held_out
        seen_items |= ids
    assert len(seen_items) == first.steps_per_epoch * 16  # one epoch visits distinct items
