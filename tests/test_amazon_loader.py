"""Amazon review dumps (2014 and 2018), metadata and k-core filtering."""

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from itemlm.data.amazon import k_core_filter, read_amazon
from itemlm.data.dataset import build_dataset
from itemlm.errors import InputError


def review(user, item, time, rating=5.0, **extra):
    return {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": time, "reviewText": "ok", **extra}


def write_lines(path: Path, records, literal=False) -> Path:
    text = "".join((repr(r) if literal else json.dumps(r)) + "\n" for r in records)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


REVIEWS = [review("u1", "A", 3), review("u1", "B", 1), review("u2", "A", 2, 3.0), review("u2", "C", 5)]


def test_2018_gz_reviews_and_metadata(tmp_path):
    reviews = write_lines(tmp_path / "Beauty.json.gz", [dict(r, verified=True) for r in REVIEWS])
    meta = write_lines(
        tmp_path / "meta_Beauty.json.gz",
        [
            {"asin": "A", "title": "Soap &amp; More", "brand": "Acme", "category": ["Beauty", "Skin", "Beauty"],
             "description": ["Gentle.", "Unscented."]},
            {"asin": "B", "title": "Comb"},
            {"asin": "Z", "title": "never reviewed"},
        ],
    )
    raw = read_amazon(reviews, meta, k_core=0)
    assert raw.source_format == "amazon-2018"
    assert raw.interactions["user_id"].tolist() == ["u1", "u1", "u2", "u2"]
    assert raw.interactions["timestamp"].tolist() == [3, 1, 2, 5]
    assert raw.interactions["rating"].tolist() == [5.0, 5.0, 3.0, 5.0]
    items = raw.items.set_index("item_id")
    assert items.loc["A", "title"] == "Soap & More"
    assert items.loc["A", "categories"] == "Beauty, Skin"
    assert items.loc["A", "description"] == "Gentle. Unscented."
    assert "Z" not in items.index
    assert raw.notes["metadata"]["lines_for_other_items"] == 1
    dataset = build_dataset("t", raw, text_holdout=0.0)
    assert dataset.num_interactions == 4


def test_2014_python_literal_lines_and_nested_categories(tmp_path):
    reviews = write_lines(tmp_path / "reviews.json", REVIEWS)
    meta = write_lines(
        tmp_path / "meta.json",
        [{"asin": "A", "title": "Soap", "categories": [["Beauty", "Skin"], ["Beauty", "Bath"]], "description": "Mild"}],
        literal=True,
    )
    raw = read_amazon(reviews, meta, k_core=1)
    assert raw.source_format == "amazon-2014"
    row = raw.items.set_index("item_id").loc["A"]
    assert (row["title"], row["categories"], row["description"]) == ("Soap", "Beauty, Skin, Bath", "Mild")
    literal_reviews = write_lines(tmp_path / "literal.json", REVIEWS, literal=True)
    assert read_amazon(literal_reviews, k_core=0).notes["python_literal_lines"] == 4


def test_k_core_is_iterated_until_stable():
    # u3 has 1 review; removing u3 leaves item C with one user, and then u2 with one item.
    frame = pd.DataFrame(
        [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u2", "C"), ("u3", "C"), ("u4", "A"), ("u4", "B")],
        columns=["user_id", "item_id"],
    )
    kept, report = k_core_filter(frame, 2)
    assert sorted(set(kept["item_id"])) == ["A", "B"]
    assert sorted(set(kept["user_id"])) == ["u1", "u2", "u4"]
    assert report["rows_removed"] == 2 and report["rounds"] >= 2
    kept, _ = k_core_filter(frame, 3)
    assert kept.empty  # only 3 users touch A and B, each needing 3 items


def test_k_core_counts_repeated_reviews_once(tmp_path):
    reviews = write_lines(tmp_path / "r.json", [review("u1", "A", 1), review("u1", "A", 2), review("u2", "A", 3)])
    with pytest.raises(InputError, match="2-core"):
        read_amazon(reviews, k_core=2)


BAD = {
    "not json": ('{"reviewerID": "u1", "asin": "A", "overall": 5, "unixReviewTime": 1}\n{broken\n', 2, "JSON object"),
    "missing key": ('{"reviewerID": "u1", "overall": 5, "unixReviewTime": 1}\n', 1, "missing asin"),
    "bad timestamp": ('{"reviewerID": "u1", "asin": "A", "overall": 5, "unixReviewTime": "soon"}\n', 1, "unixReviewTime"),
    "bad rating": ('\n{"reviewerID": "u1", "asin": "A", "overall": "great", "unixReviewTime": 1}\n', 2, "overall"),
    "not an object": ("[1, 2]\n", 1, "found a list"),
}


@pytest.mark.parametrize("text,line,expected", BAD.values(), ids=BAD.keys())
def test_bad_reviews_name_file_and_line(tmp_path, text, line, expected):
    path = tmp_path / "reviews.json"
    path.write_text(text)
    with pytest.raises(InputError, match=expected) as caught:
        read_amazon(path, k_core=0)
    assert str(caught.value).startswith(f"{path}:{line}:")


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_amazon(tmp_path / "missing.json.gz")
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_amazon(empty)
    encoded = tmp_path / "latin.json"
    encoded.write_bytes(b'{"reviewerID": "u1", "asin": "A", "overall": 5, "unixReviewTime": 1, "t": "caf\xe9"}\n')
    with pytest.raises(InputError, match="UTF-8") as caught:
        read_amazon(encoded, k_core=0)
    assert caught.value.line == 1
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(gzip.compress(json.dumps(REVIEWS[0]).encode() * 50)[:40])
    with pytest.raises(InputError, match="could not read") as caught:
        read_amazon(truncated, k_core=0)
    assert caught.value.path == str(truncated)
