"""Amazon review dumps (McAuley lab, 2014 and 2018 releases), plain or .gz.

Reviews are one record per line with `reviewerID`, `asin`, `overall`, `unixReviewTime`. The
2014 files are sometimes Python dict literals rather than JSON (single quotes), so a line that
is not JSON is read as a literal. Metadata (`meta_*.json`) gives title, brand, description and
categories (2014: `categories`, a list of lists; 2018: `category`, a list).

The papers this toolkit reproduces train on the k-core (every user and item with at least k
interactions), so `read_amazon` filters to it by default and records what that removed.
"""

from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from itemlm.data.dataset import RawTables
from itemlm.data.textfile import iter_lines
from itemlm.errors import InputError

REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def read_amazon(reviews_path: str | Path, meta_path: str | Path | None = None, *, k_core: int = 5) -> RawTables:
    """Interactions from a review dump, items from its metadata, filtered to the k-core.

    `k_core` of 0 or 1 keeps every review.
    """
    reviews_path = Path(reviews_path)
    interactions, release, literal_lines = _read_reviews(reviews_path)
    notes: dict = {"python_literal_lines": literal_lines} if literal_lines else {}
    interactions, notes["k_core"] = k_core_filter(interactions, k_core)
    if len(interactions) == 0:
        raise InputError(f"no reviews are left after {k_core}-core filtering", path=reviews_path)
    raw = RawTables(
        interactions=interactions,
        sources=[reviews_path],
        source_format=f"amazon-{release}",
        notes=notes,
    )
    if meta_path is not None:
        meta_path = Path(meta_path)
        raw.items, notes["metadata"] = _read_meta(meta_path, set(interactions["item_id"]))
        raw.sources.append(meta_path)
    return raw


def _parse_record(line: str, path: Path, lineno: int) -> tuple[dict, bool]:
    """(record, was it a Python literal) for one line; strict JSON first because it is faster."""
    try:
        record, literal = json.loads(line), False
    except ValueError:
        try:
            record, literal = ast.literal_eval(line), True
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise InputError(
                "expected one JSON object (or Python dict literal) per line", path=path, line=lineno
            ) from None
    if not isinstance(record, dict):
        raise InputError(f"expected an object per line, found a {type(record).__name__}", path=path, line=lineno)
    return record, literal


def _read_reviews(path: Path) -> tuple[pd.DataFrame, str, int]:
    users, items, times, ratings, line_numbers = [], [], [], [], []
    literal_lines = 0
    release = "2014"
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        record, literal = _parse_record(line, path, lineno)
        literal_lines += literal
        if not users and "verified" in record:  # only the 2018 release has this field
            release = "2018"
        try:
            users.append(str(record["reviewerID"]))
            items.append(str(record["asin"]))
            times.append(record["unixReviewTime"])
        except KeyError as error:
            raise InputError(
                f"missing {error.args[0]}; expected keys {', '.join(REVIEW_KEYS)}", path=path, line=lineno
            ) from None
        ratings.append(record.get("overall"))
        line_numbers.append(lineno)
    if not users:
        raise InputError("no reviews found; expected one JSON object per line", path=path)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": _numbers(times, "unixReviewTime", path, line_numbers, integer=True),
            "rating": _numbers(ratings, "overall", path, line_numbers, integer=False),
        }
    )
    return frame, release, literal_lines


def _numbers(values: list, name: str, path: Path, line_numbers: list[int], *, integer: bool) -> np.ndarray:
    """Convert a whole column at once, pointing at the first line whose value is not a number.
    A missing rating is allowed (NaN); a missing or non-integer time is not."""
    series = pd.Series(values, dtype=object)
    numbers = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    bad = ~np.isfinite(numbers)
    if integer:
        bad |= numbers != np.floor(numbers)
    else:
        bad &= series.notna().to_numpy()
    if bad.any():
        first = int(np.argmax(bad))
        kind = "an integer" if integer else "a number"
        raise InputError(f"expected {kind} for {name}, got {values[first]!r:.40}", path=path, line=line_numbers[first])
    return numbers.astype(np.int64) if integer else numbers


def k_core_filter(interactions: pd.DataFrame, k: int) -> tuple[pd.DataFrame, dict]:
    """Keep users and items with at least k distinct partners, repeating until nothing changes.

    Counts distinct (user, item) pairs, because repeated reviews are merged later and must not
    keep a user in the core.
    """
    if k <= 1:
        return interactions, {"k": k, "rounds": 0, "rows_removed": 0}
    user_codes, user_names = pd.factorize(interactions["user_id"])
    item_codes, item_names = pd.factorize(interactions["item_id"])
    pair_codes = np.unique(user_codes.astype(np.int64) * len(item_names) + item_codes)
    users, items = pair_codes // len(item_names), pair_codes % len(item_names)
    alive = np.ones(len(pair_codes), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        user_ok = np.bincount(users[alive], minlength=len(user_names)) >= k
        item_ok = np.bincount(items[alive], minlength=len(item_names)) >= k
        still = alive & user_ok[users] & item_ok[items]
        if still.sum() == alive.sum():
            break
        alive = still
    kept_users = np.bincount(users[alive], minlength=len(user_names)) > 0
    kept_items = np.bincount(items[alive], minlength=len(item_names)) > 0
    kept = interactions[kept_users[user_codes] & kept_items[item_codes]]
    report = {
        "k": k,
        "rounds": rounds,
        "rows_removed": int(len(interactions) - len(kept)),
        "users_removed": int((~kept_users).sum()),
        "items_removed": int((~kept_items).sum()),
    }
    return kept.reset_index(drop=True), report


def _text(value) -> str:
    """A metadata field as one line of plain text: lists joined, HTML entities unescaped."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(_text(part) for part in value)
    return " ".join(html.unescape(str(value)).split())


def _categories(record: dict) -> str:
    """2014 `categories` (list of lists) or 2018 `category` (list), unique in first-seen order."""
    value = record.get("categories", record.get("category")) or []
    flat = []
    for entry in value:
        flat.extend(entry if isinstance(entry, (list, tuple)) else [entry])
    names = [_text(name) for name in flat]
    return ", ".join(dict.fromkeys(name for name in names if name))


def _read_meta(path: Path, wanted: set[str]) -> tuple[pd.DataFrame, dict]:
    """Rows for the items in `wanted`; other lines are skipped before parsing, which matters
    when a whole-category metadata file holds millions of products and few survive the k-core."""
    rows = []
    skipped = 0
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        quick = _ASIN.search(line)
        if quick and quick.group(1) not in wanted:
            skipped += 1
            continue
        record, _ = _parse_record(line, path, lineno)
        if "asin" not in record:
            raise InputError("missing asin; expected metadata objects with an 'asin' key", path=path, line=lineno)
        asin = str(record["asin"])
        if asin not in wanted:
            skipped += 1
            continue
        rows.append(
            {
                "item_id": asin,
                "title": _text(record.get("title")),
                "brand": _text(record.get("brand")),
                "categories": _categories(record),
                "description": _text(record.get("description")),
            }
        )
    items = pd.DataFrame(rows, columns=["item_id", "title", "brand", "categories", "description"])
    items = items.drop_duplicates("item_id")
    report = {"items_with_metadata": int(len(items)), "lines_for_other_items": skipped}
    return items, report
