"""OpenP5's `user_sequence.txt`: one user per line, `USER ITEM ITEM ...`, oldest item first.

The file has no timestamps, so an item's position in its user's line is its timestamp. Titles
come from a separate `{item: title}` file (JSON or two-column CSV) and carry HTML entities
(`&amp;`, `&#9733;`) from the Amazon pages they were scraped from; they are unescaped here.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from itemlm.data.dataset import POSITIONS_NOTE, RawTables
from itemlm.data.item_text import key_line, read_text_mapping
from itemlm.data.textfile import iter_lines
from itemlm.errors import InputError

SEQUENCE_FILE = "user_sequence.txt"
TITLE_FILES = ("item_titles.json", "item_titles.csv")


def read_user_sequences(
    path: str | Path, item_text: str | Path | None = None, *, strict: bool = False
) -> RawTables:
    """Interactions from `user_sequence.txt` and, with `item_text`, item titles.

    `path` may also be a folder holding `user_sequence.txt` (and `item_titles.json`, used when
    `item_text` is not given). A line with a user and no item is counted and skipped. Title keys
    that no sequence mentions are counted; with `strict=True` they are an InputError.
    """
    path = Path(path)
    if path.is_dir():
        folder, path = path, path / SEQUENCE_FILE
        if item_text is None:
            item_text = next((folder / name for name in TITLE_FILES if (folder / name).is_file()), None)
    users, lengths, items = [], [], []
    first_line: dict[str, int] = {}
    users_without_items = 0
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1:
            users_without_items += 1
            continue
        user = fields[0]
        if user in first_line:
            raise InputError(
                f"user '{user}' already has a sequence on line {first_line[user]}; expected one line per user",
                path=path,
                line=lineno,
            )
        first_line[user] = lineno
        users.append(user)
        lengths.append(len(fields) - 1)
        items.extend(fields[1:])
    if not users:
        raise InputError("no user sequences found; expected lines 'USER ITEM ITEM ...'", path=path)

    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    interactions = pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users, dtype=object), lengths),
            "item_id": items,
            "timestamp": np.arange(len(items), dtype=np.int64) - starts,
            "rating": np.full(len(items), np.nan),
        }
    )
    raw = RawTables(
        interactions=interactions,
        items=pd.DataFrame({"item_id": pd.unique(interactions["item_id"])}),
        sources=[path],
        source_format="openp5",
        notes={"users_without_items_skipped": users_without_items, "timestamp": POSITIONS_NOTE},
    )
    if item_text is not None:
        _add_titles(raw, Path(item_text), strict)
    return raw


def _add_titles(raw: RawTables, path: Path, strict: bool) -> None:
    titles = read_text_mapping(path)
    catalogue = set(raw.items["item_id"])
    unknown = [key for key in titles if key not in catalogue]
    if unknown and strict:
        raise InputError(
            f"item '{unknown[0]}' is in no user sequence ({len(unknown)} such items); "
            "expected titles only for items in user_sequence.txt",
            path=path,
            line=key_line(path, unknown[0]),
        )
    mapped = raw.items["item_id"].map(titles)
    raw.items["title"] = [" ".join(html.unescape(t).split()) if isinstance(t, str) else "" for t in mapped]
    raw.sources.append(path)
    raw.notes.update(
        title_keys_not_in_sequences=len(unknown),
        items_without_title=int(mapped.isna().sum()),
        empty_titles=int((raw.items["title"] == "").sum() - mapped.isna().sum()),
    )
