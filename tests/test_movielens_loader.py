"""MovieLens folders (ml-100k, ml-1m, CSV releases) and their download, on small files made here."""

import zipfile
from pathlib import Path

import pytest

from itemlm.data.dataset import build_dataset
from itemlm.data.movielens import download_movielens, read_movielens
from itemlm.errors import InputError

GENRE_FLAGS = {"Comedy": 5, "Drama": 8, "Musical": 12}


def flags(*names):
    row = ["0"] * 19
    for name in names:
        row[GENRE_FLAGS[name]] = "1"
    return "|".join(row)


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250950\n1\t20\t5\t881250951\n")
    items = [
        f"10|Misérables, Les (1995)|01-Jan-1995||http://x|{flags('Drama', 'Musical')}",
        f"20|Toy Story (1995)|01-Jan-1995||http://y|{flags('Comedy')}",
        f"30|No Year In Title|01-Jan-1987||http://z|{flags()}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def write_csv_release(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n7,1,2.5,964982224\n")
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"American President, The (1995)",(no genres listed)\n'
    )
    return folder


def test_ml100k_counts_titles_years_genres_users(tmp_path):
    raw = read_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert raw.source_format == "movielens-100k"
    assert list(raw.interactions.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert raw.interactions["user_id"].tolist() == ["1", "2", "1"]
    assert raw.interactions["timestamp"].dtype == "int64"
    assert raw.interactions["rating"].tolist() == [4.0, 3.0, 5.0]
    items = raw.items.set_index("item_id")
    assert items.loc["10", "title"] == "Misérables, Les"  # latin-1 decoded
    assert items.loc["10", "year"] == "1995"
    assert items.loc["10", "genres"] == "Drama, Musical"
    assert items.loc["30", "title"] == "No Year In Title"
    assert items.loc["30", "year"] == "1987"  # from the release date
    assert raw.users.set_index("user_id").loc["2", "occupation"] == "other"
    dataset = build_dataset("t", raw, text_holdout=0.0)
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (2, 2, 3)


def test_ml100k_genre_names_from_u_genre(tmp_path):
    folder = write_ml100k(tmp_path)
    names = ["unknown"] + [f"G{i}" for i in range(1, 19)]
    (folder / "u.genre").write_text("".join(f"{n}|{i}\n" for i, n in enumerate(names)))
    raw = read_movielens(folder)
    assert raw.items.set_index("item_id").loc["20", "genres"] == "G5"


def test_ml1m_dat_layout(tmp_path):
    raw = read_movielens(write_ml1m(tmp_path))
    assert raw.source_format == "movielens-1m"
    assert len(raw.interactions) == 3
    items = raw.items.set_index("item_id")
    assert items.loc["661", "title"] == "Cité des enfants perdus, La"
    assert items.loc["661", "genres"] == "Adventure, Sci-Fi"
    users = raw.users.set_index("user_id")
    assert users.loc["1", "occupation"] == "K-12 student"
    assert users.loc["2", "age"] == 56


def test_csv_release_with_quoted_titles(tmp_path):
    raw = read_movielens(write_csv_release(tmp_path))
    assert raw.source_format == "movielens-csv"
    assert raw.interactions["rating"].tolist() == [4.0, 4.5, 2.5]
    items = raw.items.set_index("item_id")
    assert items.loc["3", "title"] == "American President, The"
    assert items.loc["3", "genres"] == ""
    assert raw.users is None


def test_finds_the_release_one_folder_down(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    assert read_movielens(tmp_path).source_format == "movielens-1m"


def test_folder_without_movielens_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="u.data"):
        read_movielens(tmp_path)


BAD_RATINGS = {
    "wrong column count": (b"1\t10\t4\t881250949\n2\t10\t3\n", 2, "expected 4 fields"),
    "extra column": (b"1\t10\t4\t881250949\n2\t10\t3\t881250950\t9\n", 2, "expected 4 fields"),
    "extra column everywhere": (b"1\t10\t4\t8\t0\n2\t10\t3\t8\t9\n", 1, "expected 4 fields"),
    "non-numeric user": (b"1\t10\t4\t881250949\nbob\t10\t3\t881250950\n", 2, "user_id"),
    "non-numeric timestamp": (b"1\t10\t4\tyesterday\n", 1, "timestamp"),
    "non-numeric rating": (b"1\t10\t4\t1\n\n1\t20\tgood\t2\n", 3, "rating"),
    "missing rating": (b"1\t10\t\t881250949\n", 1, "rating"),
    "bad encoding": (b"1\t10\t4\t881250949\n2\t10\t3\t88125\xff0950\n", 2, "UTF-8"),
}


@pytest.mark.parametrize("content,line,expected", BAD_RATINGS.values(), ids=BAD_RATINGS.keys())
def test_bad_u_data_names_file_and_line(tmp_path, content, line, expected):
    folder = write_ml100k(tmp_path)
    (folder / "u.data").write_bytes(content)
    with pytest.raises(InputError, match=expected) as caught:
        read_movielens(folder)
    assert caught.value.path.endswith("u.data")
    assert caught.value.line == line
    assert f"u.data:{line}:" in str(caught.value)


def test_empty_and_missing_files(tmp_path):
    folder = write_ml100k(tmp_path)
    (folder / "u.item").unlink()
    with pytest.raises(InputError, match="file not found") as caught:
        read_movielens(folder)
    assert caught.value.path.endswith("u.item")
    (folder / "u.data").write_text("")
    with pytest.raises(InputError, match="empty") as caught:
        read_movielens(folder)
    assert caught.value.path.endswith("u.data")


def test_bad_u_item_line(tmp_path):
    folder = write_ml100k(tmp_path)
    (folder / "u.item").write_text(f"10|A (1995)|01-Jan-1995||u|{flags()}\n20|B (1995)|x\n")
    with pytest.raises(InputError, match="expected 24") as caught:
        read_movielens(folder)
    assert str(caught.value).startswith(f"{folder / 'u.item'}:2:")


def test_bad_ml1m_files(tmp_path):
    folder = write_ml1m(tmp_path)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1:661::3::978302109\n")
    with pytest.raises(InputError, match="expected 4 fields") as caught:
        read_movielens(folder)
    assert (caught.value.path, caught.value.line) == (str(folder / "ratings.dat"), 2)
    write_ml1m(folder)
    (folder / "users.dat").write_text("1::F::1::10::48067\nx::M::56::16::70072\n")
    with pytest.raises(InputError, match="expected a number") as caught:
        read_movielens(folder)
    assert (Path(caught.value.path).name, caught.value.line) == ("users.dat", 2)


def test_bad_csv_release_files(tmp_path):
    folder = write_csv_release(tmp_path)
    (folder / "ratings.csv").write_text("user,item,rating,time\n1,1,4.0,1\n")
    with pytest.raises(InputError, match="expected the header") as caught:
        read_movielens(folder)
    assert caught.value.line == 1
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n2,1,four,2\n")
    with pytest.raises(InputError, match="rating") as caught:
        read_movielens(folder)
    assert caught.value.line == 3
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(InputError, match="no ratings"):
        read_movielens(folder)
    write_csv_release(folder)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n2,Heat,1995,Action\n")
    with pytest.raises(InputError, match="expected 3") as caught:
        read_movielens(folder)
    assert (Path(caught.value.path).name, caught.value.line) == ("movies.csv", 3)


def make_zip(tmp_path: Path) -> Path:
    source = write_ml100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in source.iterdir():
            bundle.write(path, f"ml-100k/{path.name}")
    return archive


def test_download_from_a_file_url(tmp_path):
    archive = make_zip(tmp_path)
    folder = download_movielens("ml-100k", tmp_path / "downloads", url=archive.as_uri())
    assert folder == tmp_path / "downloads" / "ml-100k"
    assert len(read_movielens(folder).interactions) == 3
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["ml-100k"]  # no leftovers
    archive.unlink()  # a second call reuses the folder and downloads nothing
    assert download_movielens("ml-100k", tmp_path / "downloads", url=archive.as_uri()) == folder


def test_download_failure_is_one_clear_line(tmp_path):
    missing = (tmp_path / "nowhere.zip").as_uri()
    with pytest.raises(InputError, match=r"could not download .*offline.*--source DIR"):
        download_movielens("ml-100k", tmp_path / "downloads", url=missing)
    assert list((tmp_path / "downloads").iterdir()) == []
    not_zip = tmp_path / "page.html"
    not_zip.write_text("<html>moved</html>")
    with pytest.raises(InputError, match="not a readable zip"):
        download_movielens("ml-100k", tmp_path / "downloads", url=not_zip.as_uri())
    with pytest.raises(InputError, match="unknown MovieLens release"):
        download_movielens("ml-7k", tmp_path / "downloads")


def test_download_of_an_archive_without_movielens_files(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("readme.txt", "nothing here")
    with pytest.raises(InputError, match="holds no MovieLens ratings file"):
        download_movielens("ml-100k", tmp_path / "downloads", url=archive.as_uri())
    assert list((tmp_path / "downloads").iterdir()) == []
