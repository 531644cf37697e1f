"""MovieLens folders as GroupLens ships them, the layout told apart by the files present.

- ml-100k: `u.data` (tab: user item rating timestamp), `u.item` (pipe, latin-1, 19 genre
  flags), `u.user`, optional `u.genre`.
- ml-1m (and ml-10m): `ratings.dat`, `movies.dat`, `users.dat` with `::` separators, latin-1.
- ml-latest, ml-latest-small, ml-20m, ml-25m: `ratings.csv` and `movies.csv` with headers.

Titles "Toy Story (1995)" become title "Toy Story" and year "1995".
"""

from __future__ import annotations

import csv
import http.client
import io
import math
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import pandas as pd

from itemlm.data.dataset import RawTables
from itemlm.data.item_text import split_title_year
from itemlm.data.textfile import checked_file, iter_lines, read_text_file, text_lines
from itemlm.errors import InputError

DOWNLOAD_URL = "https://files.grouplens.org/datasets/movielens/{variant}.zip"
DOWNLOADABLE = ("ml-100k", "ml-1m", "ml-latest-small", "ml-25m", "ml-20m", "ml-latest")

# The genre columns of ml-100k's u.item, in file order, for folders without u.genre.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

# users.dat in ml-1m stores occupations as codes; these are the names its README gives.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

LATIN1 = ("utf-8", "latin-1")  # GroupLens files are latin-1; some re-distributions are UTF-8
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
LAYOUTS = {"u.data": "movielens-100k", "ratings.dat": "movielens-1m", "ratings.csv": "movielens-csv"}


def detect_layout(folder: str | Path) -> tuple[str, Path]:
    """(source format, folder holding the files); looks one level down for an unzipped folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("MovieLens folder not found", path=folder)
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        for marker, layout in LAYOUTS.items():
            if (candidate / marker).is_file():
                return layout, candidate
    raise InputError(
        f"no MovieLens ratings file here; expected one of {', '.join(LAYOUTS)} (ml-100k, ml-1m, ml-latest/ml-25m)",
        path=folder,
    )


def read_movielens(folder: str | Path) -> RawTables:
    """Interactions, movies (title, year, genres) and, for ml-100k and ml-1m, user features."""
    layout, folder = detect_layout(folder)
    if layout == "movielens-100k":
        genres = ML100K_GENRES
        if (folder / "u.genre").exists():
            genres = _read_ml100k_genre_names(folder / "u.genre")
        raw = RawTables(
            interactions=read_ratings(folder / "u.data", sep="\t"),
            items=_read_ml100k_items(folder / "u.item", genres),
            users=_read_users(folder / "u.user", "|", (0, 1), _ml100k_user),
            sources=[folder / "u.data", folder / "u.item", folder / "u.user"],
        )
        if genres is not ML100K_GENRES:
            raw.sources.append(folder / "u.genre")
    elif layout == "movielens-1m":
        raw = RawTables(
            interactions=read_ratings(folder / "ratings.dat", sep="::"),
            items=_read_dat_movies(folder / "movies.dat"),
            sources=[folder / "ratings.dat", folder / "movies.dat"],
        )
        if (folder / "users.dat").exists():  # ml-10m has none
            raw.users = _read_users(folder / "users.dat", "::", (0, 2, 3), _ml1m_user)
            raw.sources.append(folder / "users.dat")
    else:
        raw = RawTables(
            interactions=read_ratings(folder / "ratings.csv", sep=",", header="userId,movieId,rating,timestamp"),
            items=_read_csv_movies(folder / "movies.csv"),
            sources=[folder / "ratings.csv", folder / "movies.csv"],
        )
    raw.source_format = layout
    return raw


# --- Ratings --------------------------------------------------------------------------------------


def read_ratings(path: Path, *, sep: str, header: str | None = None) -> pd.DataFrame:
    """user, item, rating, timestamp rows, parsed by pandas (fast) and, only when pandas
    objects or leaves a gap, scanned line by line to name the first bad line."""
    path = checked_file(path)
    if header is not None:
        first = next(iter_lines(path))[1].strip()
        if first != header:
            raise InputError(f"expected the header '{header}', found '{first[:80]}'", path=path, line=1)
    source: Path | io.BytesIO = path
    pandas_sep = sep
    if len(sep) > 1:  # pandas' fast parser takes one-character separators only
        source, pandas_sep = io.BytesIO(path.read_bytes().replace(sep.encode(), b"\t")), "\t"
    problem = None
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # rows longer than the header
        try:
            frame = pd.read_csv(
                source,
                sep=pandas_sep,
                header=None,
                skiprows=1 if header else 0,
                names=list(RATING_COLUMNS),
                dtype={"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"},
                index_col=False,
                quoting=csv.QUOTE_NONE,
                encoding="utf-8",
                engine="c",
            )
        except (ValueError, OverflowError, pd.errors.ParserWarning) as error:
            problem = str(error).strip()
    if problem is None and frame["rating"].isna().any():
        problem = "a rating is missing"
    if problem is not None:
        _raise_first_bad_line(path, sep, skip=1 if header else 0, fallback=problem)
    if len(frame) == 0:
        raise InputError("no ratings found", path=path)
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            "timestamp": frame["timestamp"].astype("int64"),
            "rating": frame["rating"].astype("float64"),
        }
    )


def _is_number(text: str, integer: bool) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and (value.is_integer() or not integer)


def _raise_first_bad_line(path: Path, sep: str, *, skip: int, fallback: str) -> None:
    expected = sep.join(RATING_COLUMNS) if sep != "\t" else "user_id<TAB>item_id<TAB>rating<TAB>timestamp"
    seen_data = False
    for lineno, line in iter_lines(path):
        if lineno <= skip or not line.strip():
            continue
        seen_data = True
        fields = line.split(sep)
        if len(fields) != 4:
            raise InputError(f"expected 4 fields '{expected}', found {len(fields)}", path=path, line=lineno)
        for name, value in zip(RATING_COLUMNS, fields):
            integer = name != "rating"
            if not _is_number(value, integer):
                kind = "an integer" if integer else "a number"
                raise InputError(f"expected {kind} for {name}, got '{value.strip()[:40]}'", path=path, line=lineno)
    if not seen_data:
        raise InputError("no ratings found", path=path)
    raise InputError(f"could not parse the ratings ({fallback})", path=path)


# --- Movies ---------------------------------------------------------------------------------------


def _movie_id(value: str, path: Path, lineno: int) -> str:
    if not value.strip().isdigit():
        raise InputError(f"expected a numeric movie id, got '{value[:40]}'", path=path, line=lineno)
    return value.strip()


def _movie_row(item_id: str, full_title: str, genres: list[str], fallback_year: str = "") -> dict:
    title, year = split_title_year(full_title)
    genres = [g for g in genres if g and g not in ("unknown", "(no genres listed)")]
    return {"item_id": item_id, "title": title, "year": year or fallback_year, "genres": ", ".join(genres)}


def _read_ml100k_genre_names(path: Path) -> tuple[str, ...]:
    """u.genre: 'Genre|index' per line, in the order of u.item's flag columns."""
    names = []
    for lineno, line in text_lines(read_text_file(path, LATIN1)):
        if line.strip():
            name, sep, _ = line.partition("|")
            if not sep:
                raise InputError("expected 'Genre|index'", path=path, line=lineno)
            names.append(name.strip())
    return tuple(names)


def _read_ml100k_items(path: Path, genres: tuple[str, ...]) -> pd.DataFrame:
    """u.item: id|title|release date|video release date|IMDb URL|one 0/1 flag per genre."""
    rows = []
    width = 5 + len(genres)
    for lineno, line in text_lines(read_text_file(path, LATIN1)):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != width:
            raise InputError(
                f"expected {width} '|'-separated fields (id|title|release date|video date|url|"
                f"{len(genres)} genre flags), found {len(fields)}",
                path=path,
                line=lineno,
            )
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise InputError("expected genre flags 0 or 1 after the URL field", path=path, line=lineno)
        release = re.search(r"(\d{4})\s*$", fields[2])
        rows.append(
            _movie_row(
                _movie_id(fields[0], path, lineno),
                fields[1],
                [name for name, flag in zip(genres, flags) if flag == "1"],
                release.group(1) if release else "",
            )
        )
    return pd.DataFrame(rows, columns=["item_id", "title", "year", "genres"])


def _read_dat_movies(path: Path) -> pd.DataFrame:
    """movies.dat: id::Title (Year)::Genre|Genre."""
    rows = []
    for lineno, line in text_lines(read_text_file(path, LATIN1)):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 3:
            raise InputError(
                f"expected 3 fields 'id::Title (Year)::Genres', found {len(fields)}", path=path, line=lineno
            )
        rows.append(_movie_row(_movie_id(fields[0], path, lineno), fields[1], fields[2].split("|")))
    return pd.DataFrame(rows, columns=["item_id", "title", "year", "genres"])


def _read_csv_movies(path: Path) -> pd.DataFrame:
    """movies.csv: movieId,title,genres with a header; titles with commas are quoted."""
    reader = csv.reader(io.StringIO(read_text_file(path)))
    rows = []
    try:
        header = next(reader, [])
        if [h.strip() for h in header] != ["movieId", "title", "genres"]:
            found = ",".join(header)[:80]
            raise InputError(f"expected the header 'movieId,title,genres', found '{found}'", path=path, line=1)
        for row in reader:
            if not row:
                continue
            if len(row) != 3:
                raise InputError(
                    f"expected 3 comma-separated fields (movieId,title,genres), found {len(row)}",
                    path=path,
                    line=reader.line_num,
                )
            rows.append(_movie_row(_movie_id(row[0], path, reader.line_num), row[1], row[2].split("|")))
    except csv.Error as error:
        raise InputError(f"malformed CSV ({error})", path=path, line=reader.line_num) from None
    return pd.DataFrame(rows, columns=["item_id", "title", "year", "genres"])


# --- Users ----------------------------------------------------------------------------------------


def _ml100k_user(fields: list[str]) -> dict:
    """u.user: id|age|gender|occupation|zip."""
    return {"age": int(fields[1]), "gender": fields[2], "occupation": fields[3], "zip_code": fields[4]}


def _ml1m_user(fields: list[str]) -> dict:
    """users.dat: id::gender::age group::occupation code::zip."""
    code = int(fields[3])
    occupation = ML1M_OCCUPATIONS[code] if 0 <= code < len(ML1M_OCCUPATIONS) else str(code)
    return {"age": int(fields[2]), "gender": fields[1], "occupation": occupation, "zip_code": fields[4]}


def _read_users(path: Path, sep: str, numeric: tuple[int, ...], parse) -> pd.DataFrame:
    """One user per line, 5 fields; `numeric` are the positions that must hold numbers."""
    rows = []
    for lineno, line in text_lines(read_text_file(path, LATIN1)):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(sep)]
        if len(fields) != 5:
            raise InputError(f"expected 5 '{sep}'-separated fields, found {len(fields)}", path=path, line=lineno)
        bad = next((i for i in numeric if not fields[i].isdigit()), None)
        if bad is not None:
            raise InputError(f"expected a number in field {bad + 1}, got '{fields[bad][:40]}'", path=path, line=lineno)
        rows.append({"user_id": fields[0], **parse(fields)})
    return pd.DataFrame(rows, columns=["user_id", "age", "gender", "occupation", "zip_code"])


# --- Download -------------------------------------------------------------------------------------


def download_movielens(variant: str, dest_folder: str | Path, *, url: str | None = None, timeout: float = 60) -> Path:
    """Download and unzip a GroupLens release into `dest_folder/variant`; returns that folder.

    Nothing is left half-written: the zip goes to a temporary folder, is extracted there, and
    the release folder is renamed into place only once it holds MovieLens files. A complete
    folder already in place is reused. `url` replaces the GroupLens address (tests, mirrors).
    """
    if url is None:
        if variant not in DOWNLOADABLE:
            raise InputError(f"unknown MovieLens release '{variant}'; expected one of {', '.join(DOWNLOADABLE)}")
        url = DOWNLOAD_URL.format(variant=variant)
    dest_folder = Path(dest_folder)
    target = dest_folder / variant
    if _is_release(target):
        return target
    dest_folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{variant}.", dir=dest_folder))
    try:
        archive = staging / "download.zip"
        _fetch(url, archive, timeout)
        extracted = staging / "extracted"
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(extracted)  # extractall drops absolute and '..' member paths
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"the file downloaded from {url} is not a readable zip ({error})") from None
        if not _is_release(extracted):
            raise InputError(f"the archive from {url} holds no MovieLens ratings file ({', '.join(LAYOUTS)})")
        _, data_folder = detect_layout(extracted)
        if target.exists():
            shutil.rmtree(target)
        os.replace(data_folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_release(folder: Path) -> bool:
    try:
        detect_layout(folder)
    except InputError:
        return False
    return True


def _fetch(url: str, destination: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (OSError, ValueError, http.client.HTTPException) as error:  # URLError is an OSError
        reason = getattr(error, "reason", None) or error
        raise InputError(
            f"could not download {url} ({reason}; offline?); download it yourself and pass --source DIR"
        ) from None
