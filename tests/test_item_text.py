"""Title normalization, text mappings, and joining text onto items by id or by title and year."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from itemlm.data.item_text import join_item_text, normalize_title, read_ml1m_titles, read_text_mapping
from itemlm.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize(
    "a,b",
    [
        ("Usual Suspects, The", "The Usual Suspects (1995)"),
        ("Misérables, Les", "les miserables"),
        ("Postino, Il", "Il Postino"),
        ("Blue Angel, The (Blaue Engel, Der)", "the blue angel der blaue engel"),
        ("Star Maker, The (Uomo delle stelle, L')", "The Star Maker (L'Uomo delle stelle)"),
        ("Oscar & Lucinda", "Oscar and Lucinda"),
        ("Mr. Holland's Opus", "mr hollands opus"),
    ],
)
def test_normalize_title_makes_spellings_agree(a, b):
    assert normalize_title(a) == normalize_title(b)


def test_normalize_title_keeps_words_and_appends_year():
    assert normalize_title("Die Hard (1988)") == "die hard"
    assert normalize_title("Toy Story", year="1995") == normalize_title("Toy Story (1995)", 1995) == "toy story 1995"


def items_frame():
    return pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5", "6", "7"],
            "title": ["Toy Story", "Usual Suspects, The", "Seven (Se7en)", "Howling, The", "Hamlet", "Nowhere", "Misérables, Les"],
            "year": ["1995", "1995", "1995", "1981", "1996", "1990", "1995"],
        }
    )


KEY_TITLES = {
    "10": "Toy Story (1995)",
    "20": "Usual Suspects, The (1995)",
    "30": "Seven (a.k.a. Se7en) (1995)",
    "40": "Howling, The (1980)",
    "50": "Hamlet (1996)",
    "51": "Hamlet (1996)",
    "70": "Les Misérables (1995)",
    "80": "Heat (1995)",
}


def test_join_by_title_and_year_with_fallbacks():
    texts = {key: f"text {key}" for key in KEY_TITLES}
    joined, report = join_item_text(items_frame(), texts, key_titles=KEY_TITLES)
    got = dict(zip(joined["item_id"], joined["description"]))
    assert got == {"1": "text 10", "2": "text 20", "3": "text 30", "4": "text 40", "5": "", "6": "", "7": "text 70"}
    assert report["matched"] == 5
    assert report["matched_by"] == {"title_year": 3, "alternative_title": 1, "year_off_by_one": 1}
    assert report["ambiguous"] == 1  # two different films named Hamlet (1996)
    assert report["unmatched_items"] == 2
    assert report["unmatched_text_keys"] == 3  # 50, 51, 80
    json.dumps(report)  # goes into the dataset manifest


def test_year_off_by_one_only_when_unambiguous():
    items = pd.DataFrame({"item_id": ["1"], "title": ["Crash"], "year": ["1996"]})
    key_titles = {"a": "Crash (1995)", "b": "Crash (1997)"}
    joined, report = join_item_text(items, {"a": "x", "b": "y"}, key_titles=key_titles)
    assert joined["description"].tolist() == [""]
    assert report["ambiguous"] == 1


def test_join_by_id_counts_unknown_keys_and_strict_raises(tmp_path):
    items = pd.DataFrame({"item_id": ["A", "B"], "title": ["a", "b"]})
    source = tmp_path / "desc.json"
    source.write_text('{\n"A": "about a",\n"Q": "about nothing"\n}\n')
    texts = read_text_mapping(source)
    joined, report = join_item_text(items, texts, field="description")
    assert joined["description"].tolist() == ["about a", ""]
    assert (report["matched"], report["unmatched_items"], report["unknown_text_keys"]) == (1, 1, 1)
    with pytest.raises(InputError, match="'Q'") as caught:
        join_item_text(items, texts, strict=True, source=source)
    assert (caught.value.path, caught.value.line) == (str(source), 3)


def test_read_text_mapping_json_and_csv(tmp_path):
    as_json = tmp_path / "m.json"
    as_json.write_text('{"1": "one", "2": null, "3": 3}')
    assert read_text_mapping(as_json) == {"1": "one", "2": "", "3": "3"}
    as_csv = tmp_path / "m.csv"
    as_csv.write_text('key,text\n1,"one, with comma"\n\n2,two\n')
    assert read_text_mapping(as_csv) == {"1": "one, with comma", "2": "two"}


@pytest.mark.parametrize(
    "name,content,line,expected",
    [
        ("a.json", '{"1": "x",\n "2": }', 2, "invalid JSON"),
        ("b.json", '["x"]', 1, "JSON object"),
        ("c.json", '{\n"1": ["x"]\n}', 2, "expected text"),
        ("d.csv", "key,text\n1,x\n2\n", 3, "expected 2"),
        ("e.csv", "key,text\n1,x\n1,y\n", 3, "already appeared on line 2"),
        ("f.csv", "only-one-column\n1\n", 1, "two columns"),
    ],
)
def test_read_text_mapping_errors(tmp_path, name, content, line, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=expected) as caught:
        read_text_mapping(path)
    assert (caught.value.path, caught.value.line) == (str(path), line)


def test_read_text_mapping_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_text_mapping(tmp_path / "none.json")
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"1": "ok",\n"2": "caf\xe9"}')
    with pytest.raises(InputError, match="decoded") as caught:
        read_text_mapping(path)
    assert caught.value.line == 2


def test_read_ml1m_titles_latin1_and_errors(tmp_path):
    path = tmp_path / "movies.dat"
    path.write_bytes("1::Toy Story (1995)::Animation\n73::Misérables, Les (1995)::Drama\n".encode("latin-1"))
    assert read_ml1m_titles(path) == {"1": "Toy Story (1995)", "73": "Misérables, Les (1995)"}
    path.write_text("1::Toy Story (1995)::Animation\n2::Jumanji (1995)\n")
    with pytest.raises(InputError, match="expected 3 fields") as caught:
        read_ml1m_titles(path)
    assert str(caught.value).startswith(f"{path}:2:")


@pytest.mark.slow
def test_ml100k_descriptions_match_by_title():
    movielens = SHARED_DATA / "movielens"
    spec = importlib.util.find_spec("recbole")
    if not (movielens / "ml1m_movies.dat").exists():
        pytest.skip(f"reference data not present at {movielens} (see shared/data/README.md)")
    if spec is None:
        pytest.skip("recbole wheel (which ships MovieLens-100K) is not installed")
    item_file = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k" / "ml-100k.item"
    items = pd.read_csv(item_file, sep="\t", dtype=str, keep_default_na=False)
    items.columns = ["item_id", "title", "year", "genres"]
    texts = read_text_mapping(movielens / "ml1m_item_descriptions.json")
    joined, report = join_item_text(items, texts, key_titles=read_ml1m_titles(movielens / "ml1m_movies.dat"))
    assert len(items) == 1682
    assert report["matched"] >= 1600
    assert report["ambiguous"] == 0
    toy_story = joined.set_index("item_id").loc["1", "description"]
    assert "Toy Story" in toy_story
