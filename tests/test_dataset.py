import json

import numpy as np
import pandas as pd
import pytest

from itemlm.data.dataset import InteractionDataset, build_dataset
from itemlm.errors import InputError
from tests.conftest import make_raw


def test_indices_are_dense_and_sorted_by_user_then_time(tiny_dataset):
    inter = tiny_dataset.interactions
    assert tiny_dataset.num_users == 3 and tiny_dataset.num_items == 5
    assert sorted(inter["item"].unique()) == list(range(5))
    for _, group in inter.groupby("user"):
        assert group["timestamp"].is_monotonic_increasing


def test_duplicates_keep_the_earliest_and_are_counted():
    raw = make_raw([("u", "x", 5), ("u", "x", 1), ("u", "y", 3), ("v", "x", 2)])
    dataset = build_dataset("d", raw, text_holdout=0.0)
    assert dataset.manifest["cleaning"]["duplicate_interactions_dropped"] == 1
    user_u = dataset.interactions[dataset.interactions["user"] == 0]
    assert list(user_u["timestamp"]) == [1, 3]


def test_unknown_items_kept_with_empty_text_and_unused_items_dropped():
    items = pd.DataFrame({"item_id": ["x", "zzz"], "title": ["Ex", "never seen"]})
    raw = make_raw([("u", "x", 1), ("u", "y", 2)], items=items)
    dataset = build_dataset("d", raw, text_holdout=0.0)
    cleaning = dataset.manifest["cleaning"]
    assert cleaning["items_without_metadata"] == 1
    assert cleaning["items_without_interactions_dropped"] == 1
    assert list(dataset.items["item_id"]) == ["x", "y"]
    assert list(dataset.items["title"]) == ["Ex", ""]


def test_users_without_interactions_and_short_users_are_dropped_and_counted():
    users = pd.DataFrame({"user_id": ["u", "v", "ghost"], "age": [1, 2, 3]})
    raw = make_raw([("u", "x", 1), ("u", "y", 2), ("v", "x", 1)], users=users)
    dataset = build_dataset("d", raw, text_holdout=0.0, min_user_interactions=2)
    assert list(dataset.users["user_id"]) == ["u"]
    assert dataset.manifest["cleaning"]["users_without_interactions_dropped"] == 1
    assert dataset.manifest["cleaning"]["short_users_dropped"] == 1


def test_empty_interactions_is_a_clear_error():
    raw = make_raw([])
    with pytest.raises(InputError, match="no interactions"):
        build_dataset("d", raw)


def test_text_holdout_is_seeded_and_sized(ml100k):
    held = ml100k.items["text_held_out"].to_numpy()
    assert held.sum() == round(0.1 * 1682)
    again = build_dataset("ml-100k", make_raw([("u", str(i), i) for i in range(1682)]), text_holdout=0.1, seed=0)
    assert np.array_equal(again.items["text_held_out"].to_numpy(), held)
    other = build_dataset("x", make_raw([("u", str(i), i) for i in range(1682)]), text_holdout=0.1, seed=1)
    assert not np.array_equal(other.items["text_held_out"].to_numpy(), held)


def test_save_load_round_trip(tmp_path, tiny_dataset):
    folder = tiny_dataset.save(tmp_path / "tiny")
    loaded = InteractionDataset.load(folder)
    pd.testing.assert_frame_equal(loaded.interactions, tiny_dataset.interactions)
    pd.testing.assert_frame_equal(loaded.items, tiny_dataset.items)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"users": 3, "items": 5, "interactions": 11}


def test_failed_save_keeps_the_previous_copy(tmp_path, tiny_dataset, monkeypatch):
    folder = tiny_dataset.save(tmp_path / "tiny")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        tiny_dataset.save(folder)
    assert InteractionDataset.load(folder).num_interactions == 11
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_loading_a_folder_that_is_not_a_dataset_names_it(tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        InteractionDataset.load(tmp_path)


def test_ml100k_stats(ml100k):
    stats = ml100k.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["interactions_per_user"]["min"] == 20
    assert stats["items_with_text"]["title"] == 1682
    assert ml100k.items.loc[0, "genres"] == "Animation, Children's, Comedy"


def test_a_source_changed_since_preparation_is_said_on_load_and_the_prepared_copy_still_loads(tmp_path, capsys):
    import os

    from itemlm.data.prepare import PrepareOptions, load_dataset, prepare_dataset

    source = tmp_path / "toy"
    source.mkdir()
    inter = source / "toy.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t10\t1\n1\t11\t2\n2\t10\t3\n")
    prepare_dataset("toy", PrepareOptions(source=source, text_holdout=0.0), home=tmp_path / "home")
    assert load_dataset("toy", home=tmp_path / "home").num_interactions == 3
    assert "changed" not in capsys.readouterr().err

    stat = inter.stat()
    os.utime(inter, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes: not a change
    load_dataset("toy", home=tmp_path / "home")
    assert "changed" not in capsys.readouterr().err

    inter.write_text(inter.read_text().replace("2\t10\t3", "2\t11\t3"))  # same size, other bytes
    os.utime(inter, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert load_dataset("toy", home=tmp_path / "home").num_interactions == 3
    err = capsys.readouterr().err
    assert "warning: dataset 'toy'" in err and str(inter.resolve()) in err and "prepare toy" in err

    inter.write_text(inter.read_text() + "3\t10\t4\n")  # another size
    load_dataset("toy", home=tmp_path / "home")
    assert "changed since" in capsys.readouterr().err


def test_recbole_files_end_lines_at_newlines_only_and_name_the_real_line(tmp_path):
    from itemlm.data.recbole import read_recbole

    source = tmp_path / "toy"
    source.mkdir()
    (source / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t10\t5\n\n1\t11\t4\n")
    # a description holding U+2028 (a line separator to str.splitlines) is one field of one line
    (source / "toy.item").write_text("item_id:token\ttitle:token_seq\tdescription:token_seq\n10\tHeat\tA heist.\u2028Long.\n11\tCasino\tLas Vegas.\n",
                                     encoding="utf-8")
    raw = read_recbole(source)
    assert raw.items["description"].tolist() == ["A heist.\u2028Long.", "Las Vegas."]
    (source / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t10\t5\n\n1\t11\tfive\n")
    with pytest.raises(InputError, match=r"toy.inter:4: field 'rating' must be a number"):  # line 4: the blank line counts
        read_recbole(source)
