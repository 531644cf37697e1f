"""RecBole atomic files (`NAME.inter`, `NAME.item`, `NAME.user`): tab-separated, typed headers.

A header field looks like `user_id:token`; `token_seq` fields hold space-separated tokens. The
embedded default dataset, MovieLens-100K, ships in this format inside the recbole wheel.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from itemlm.data.dataset import RawTables
from itemlm.data.textfile import text_lines
from itemlm.errors import InputError

ITEM_FIELD_NAMES = {
    "title": ("title", "movie_title", "item_title", "name"),
    "year": ("year", "release_year"),
    "genres": ("genres", "genre", "class"),
    "categories": ("categories", "category", "sales_type"),
    "brand": ("brand",),
    "description": ("description", "desc", "overview"),
}


def read_atomic_file(path: Path) -> tuple[list[str], list[str], list[list[str]], list[int]]:
    """Names, types, rows and each row's line number in the file; every row checked for its column
    count. Lines end at newlines only (a description may hold U+2028 or U+0085)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise InputError("is not valid UTF-8 (RecBole atomic files are UTF-8)", path=path, line=line) from None
    lines = [line for _, line in text_lines(text)]
    if not lines or not lines[0].strip():
        raise InputError("empty file: expected a header like 'user_id:token<TAB>item_id:token'", path=path)
    names, types = [], []
    for field in lines[0].split("\t"):
        name, sep, kind = field.partition(":")
        if not sep:
            raise InputError(f"header field '{field}' is not 'name:type'", path=path, line=1)
        names.append(name.strip())
        types.append(kind.strip())
    rows, line_numbers = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(names):
            raise InputError(f"expected {len(names)} tab-separated columns, found {len(values)}", path=path, line=number)
        rows.append(values)
        line_numbers.append(number)
    return names, types, rows, line_numbers


def _column(names: list[str], wanted: str, path: Path, required: bool = True) -> int | None:
    if wanted in names:
        return names.index(wanted)
    if required:
        raise InputError(f"no '{wanted}' field in the header (found: {', '.join(names)})", path=path, line=1)
    return None


def _numbers(rows: list[list[str]], column: int, field: str, path: Path, line_numbers: list[int], integer: bool) -> list[float]:
    values = []
    for number, row in zip(line_numbers, rows):
        try:
            value = float(row[column])
        except ValueError:
            raise InputError(f"field '{field}' must be a number, found '{row[column]}'", path=path, line=number) from None
        if integer and not math.isfinite(value):
            raise InputError(f"field '{field}' must be a finite number", path=path, line=number)
        values.append(value)
    return values


def read_recbole(folder: str | Path, name: str | None = None) -> RawTables:
    """Read `NAME.inter` and, when present, `NAME.item` and `NAME.user` from a folder."""
    folder = Path(folder)
    if name is None:
        found = sorted(folder.glob("*.inter"))
        if not found:
            raise InputError("no RecBole '.inter' file in this folder", path=folder)
        name = found[0].stem
    inter_path = folder / f"{name}.inter"
    names, _, rows, line_numbers = read_atomic_file(inter_path)
    if not rows:
        raise InputError("no interactions after the header", path=inter_path)
    user = _column(names, "user_id", inter_path)
    item = _column(names, "item_id", inter_path)
    time = _column(names, "timestamp", inter_path, required=False)
    rating = _column(names, "rating", inter_path, required=False)
    interactions = pd.DataFrame(
        {
            "user_id": [row[user] for row in rows],
            "item_id": [row[item] for row in rows],
            "timestamp": (
                [int(v) for v in _numbers(rows, time, "timestamp", inter_path, line_numbers, integer=True)]
                if time is not None
                else list(range(len(rows)))
            ),
            "rating": (
                _numbers(rows, rating, "rating", inter_path, line_numbers, integer=False)
                if rating is not None
                else [float("nan")] * len(rows)
            ),
        }
    )
    raw = RawTables(interactions=interactions, sources=[inter_path], source_format="recbole")
    if time is None:
        raw.notes["timestamp"] = "no timestamp field: file order is used as time order"

    item_path = folder / f"{name}.item"
    if item_path.exists():
        names, types, rows, _ = read_atomic_file(item_path)
        item = _column(names, "item_id", item_path)
        table = {"item_id": [row[item] for row in rows]}
        for target, aliases in ITEM_FIELD_NAMES.items():
            column = next((names.index(a) for a in aliases if a in names), None)
            if column is None:
                continue
            joiner = ", " if target in ("genres", "categories") and types[column] == "token_seq" else None
            table[target] = [", ".join(row[column].split()) if joiner else row[column] for row in rows]
        raw.items = pd.DataFrame(table)
        raw.sources.append(item_path)

    user_path = folder / f"{name}.user"
    if user_path.exists():
        names, _, rows, _ = read_atomic_file(user_path)
        user = _column(names, "user_id", user_path)
        raw.users = pd.DataFrame(rows, columns=names).rename(columns={names[user]: "user_id"})
        raw.sources.append(user_path)
    return raw
