"""Several short texts per item, built from its metadata, so stage 1 cannot memorize one string.

View 0 (title, year and genres/categories) is the canonical one: retrieval is evaluated against it.
The others vary what is said and how, and a description (when the item table has one) adds views
made of its sentences. Text-held-out items get views too, for evaluation; training never reads them.
"""

from __future__ import annotations

import re

import pandas as pd

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _clean(value) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def display_title(row) -> str:
    """`Title (Year)` when the year is known and not already in the title."""
    title, year = _clean(row.get("title")), _clean(row.get("year"))
    if year and year not in title:
        return f"{title} ({year})" if title else year
    return title or "an untitled item"


def item_text_views(row, max_description_sentences: int = 2) -> list[str]:
    title = display_title(row)
    plain_title = _clean(row.get("title")) or title
    tags = _clean(row.get("genres")) or _clean(row.get("categories"))
    brand = _clean(row.get("brand"))
    year = _clean(row.get("year"))
    views = [f"{title}. {tags}." if tags else f"{title}."]
    views.append(title)
    if tags:
        views.append(f"{tags}: {plain_title}")
        first_tag = tags.split(",")[0].strip().lower()
        views.append(f"a {first_tag} title{f' from {year}' if year else ''}, {plain_title}")
    if brand:
        views.append(f"{plain_title} by {brand}")
    description = _clean(row.get("description"))
    if description:
        sentences = [s for s in SENTENCE_END.split(description) if s]
        for start in range(0, min(len(sentences), 6), max_description_sentences):
            views.append(" ".join(sentences[start : start + max_description_sentences]))
        views.append(f"{title}. {sentences[0]}")
    return views


def build_text_views(items: pd.DataFrame) -> list[list[str]]:
    """Views for every item, in item-index order."""
    return [item_text_views(row) for row in items.to_dict("records")]
