"""OpenP5 user_sequence.txt with optional item titles."""

import gzip
from pathlib import Path

import pytest

from itemlm.data.dataset import build_dataset
from itemlm.data.openp5 import read_user_sequences
from itemlm.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_sequences(folder: Path, text: str = "U1 A B C\n\nU2 B D\nU3\nU4 A C D E\n") -> Path:
    path = folder / "user_sequence.txt"
    path.write_text(text)
    return path


def test_sequences_become_ordered_interactions(tmp_path):
    raw = read_user_sequences(write_sequences(tmp_path))
    inter = raw.interactions
    assert raw.source_format == "openp5"
    assert len(inter) == 9
    assert inter["user_id"].tolist()[:5] == ["U1", "U1", "U1", "U2", "U2"]
    assert inter["timestamp"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert inter["rating"].isna().all()
    assert raw.items["item_id"].tolist() == ["A", "B", "C", "D", "E"]
    assert raw.notes["users_without_items_skipped"] == 1
    dataset = build_dataset("t", raw, text_holdout=0.0)
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (3, 5, 9)
    # positions are no times: a global time cut is refused, leave-one-out works
    from itemlm.data.splits import make_split

    with pytest.raises(InputError, match="no times, only each item's position"):
        make_split(dataset, "temporal")
    assert len(make_split(dataset, "leave-one-out").test) == 2


def test_json_titles_are_unescaped(tmp_path):
    titles = tmp_path / "item_titles.json"
    titles.write_text('{"A": "Soap &amp; Water", "B": "&#9733;Sale&#9733;  Oil", "C": ""}')
    raw = read_user_sequences(write_sequences(tmp_path), item_text=titles)
    by_id = raw.items.set_index("item_id")["title"]
    assert by_id["A"] == "Soap & Water"
    assert by_id["B"] == "\u2605Sale\u2605 Oil"
    assert by_id["D"] == ""
    assert raw.notes["items_without_title"] == 2
    assert raw.notes["empty_titles"] == 1
    assert titles in raw.sources


def test_csv_titles_and_folder_argument(tmp_path):
    write_sequences(tmp_path)
    (tmp_path / "item_titles.csv").write_text('item,title\nA,"Comb, wide"\nE,Brush\n')
    raw = read_user_sequences(tmp_path)
    assert raw.items.set_index("item_id")["title"].to_dict() == {"A": "Comb, wide", "B": "", "C": "", "D": "", "E": "Brush"}


def test_gzipped_sequences(tmp_path):
    path = tmp_path / "user_sequence.txt.gz"
    path.write_bytes(gzip.compress(b"U1 A B\nU2 B\n"))
    assert len(read_user_sequences(path).interactions) == 3


def test_titles_for_unknown_items_are_counted_or_strict(tmp_path):
    sequences = write_sequences(tmp_path)
    titles = tmp_path / "titles.json"
    titles.write_text('{\n"A": "x",\n"Z": "not in any sequence"\n}\n')
    raw = read_user_sequences(sequences, item_text=titles)
    assert raw.notes["title_keys_not_in_sequences"] == 1
    with pytest.raises(InputError, match="'Z'") as caught:
        read_user_sequences(sequences, item_text=titles, strict=True)
    assert (caught.value.path, caught.value.line) == (str(titles), 3)


def test_bad_inputs_name_file_and_line(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_user_sequences(tmp_path / "user_sequence.txt")
    empty = write_sequences(tmp_path, "")
    with pytest.raises(InputError, match="empty"):
        read_user_sequences(empty)
    blank = write_sequences(tmp_path, "\n\nU1\n")
    with pytest.raises(InputError, match="no user sequences"):
        read_user_sequences(blank)
    path = tmp_path / "user_sequence.txt"
    path.write_bytes(b"U1 A B\nU2 \xe9t\xe9\n")
    with pytest.raises(InputError, match="UTF-8") as caught:
        read_user_sequences(path)
    assert str(caught.value).startswith(f"{path}:2:")
    write_sequences(tmp_path, "U1 A B\nU2 C\nU1 D\n")
    with pytest.raises(InputError, match="line 1") as caught:
        read_user_sequences(path)
    assert caught.value.line == 3


def test_bad_title_files(tmp_path):
    sequences = write_sequences(tmp_path)
    broken = tmp_path / "t.json"
    broken.write_text('{\n"A": "x",\n"B" "y"\n}')
    with pytest.raises(InputError, match="invalid JSON") as caught:
        read_user_sequences(sequences, item_text=broken)
    assert (caught.value.path, caught.value.line) == (str(broken), 3)
    three = tmp_path / "t.csv"
    three.write_text("item,title\nA,x\nB,y,z\n")
    with pytest.raises(InputError, match="expected 2") as caught:
        read_user_sequences(sequences, item_text=three)
    assert caught.value.line == 3


@pytest.mark.slow
def test_real_beauty_counts():
    folder = SHARED_DATA / "beauty"
    if not (folder / "user_sequence.txt").exists():
        pytest.skip(f"reference data not present at {folder} (see shared/data/README.md)")
    raw = read_user_sequences(folder / "user_sequence.txt", item_text=folder / "item_titles.json")
    dataset = build_dataset("beauty", raw)
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (22_363, 12_101, 198_502)
    assert raw.notes["title_keys_not_in_sequences"] == 0
    assert not dataset.items["title"].str.contains("&amp;|&#", regex=True).any()
