"""names_title: does a generated answer name the item? The cheapest honest check of item -> text.

An answer names an item when the item's normalized title (without its year) appears in the
normalized answer. Normalizing lowercases, drops punctuation and the "(1995)" year, and turns
MovieLens' "Usual Suspects, The" back into "the usual suspects", so "It is The Usual Suspects."
counts and "Suspects" does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|das|der|die|el|l')$", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def bare_title(title: str) -> str:
    """"Usual Suspects, The (1995)" -> "The Usual Suspects": the title as people say it."""
    title = _YEAR.sub("", title.strip())
    match = _TRAILING_ARTICLE.match(title)
    return f"{match.group(2)} {match.group(1)}" if match else title


def normalize(text: str) -> str:
    """Lowercase words separated by single spaces, with spaces at both ends (whole-word matching)."""
    return " " + " ".join(_NOT_WORD.split(text.lower())).strip() + " "


def names_title(answer: str, title: str) -> bool:
    """True when `answer` contains the whole of `title` (without its year), word for word."""
    wanted = normalize(bare_title(title))
    if not wanted.strip():
        return False
    return wanted in normalize(bare_title_mentions(answer))


def bare_title_mentions(answer: str) -> str:
    """The answer with MovieLens-style "Title, The" rewritten too, so a model that answers in the
    catalogue's own spelling ("Usual Suspects, The (1995)") names the item."""
    return re.sub(r"([^,.;:!?]+), (The|A|An)\b", r"\2 \1", answer)


def names_title_rate(answers: Sequence[str], titles: Sequence[str]) -> float:
    """Share of answers that name their item (nan for no answers)."""
    if not len(answers):
        return float("nan")
    return float(np.mean([names_title(a, t) for a, t in zip(answers, titles)]))
