"""names_title: does a generated answer name the item? The cheapest honest check of item -> text.

An answer names an item when the item's normalized title (without its year) appears in the
normalized answer. Normalizing lowercases, drops punctuation and the "(1995)" year, and turns
MovieLens' "Usual Suspects, The" back into "the usual suspects", so "It is The Usual Suspects."
counts and "Suspects" does not. Every catalogue title, written as the catalogue writes it,
names its item (before 2026-12-05 the 54 ML-100K titles whose article is not English or sits
inside the title, "Postino, Il", "Godfather: Part II, The", did not). A sequel's title also names
the film it continues ("Die Hard 2" contains "Die Hard"): the check knows one title, not the catalogue.
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
    """True when `answer` contains the whole of `title` (without its year), word for word, as
    people say it or as the catalogue writes it."""
    forms = title_forms(title)
    if not forms:
        return False
    said = (normalize(answer), normalize(bare_title_mentions(answer)))
    return any(form in text for form in forms for text in said)


def title_forms(title: str) -> set[str]:
    """The normalized spellings of a title that name it: the catalogue's own ("Postino, Il"), the
    article moved to the front of the whole title ("The Good, The Bad and The Ugly"), and moved in
    each parenthesized part ("The Big Blue (Le Grand bleu)")."""
    plain = _YEAR.sub("", title.strip())
    by_part = " ".join(_article_first(part) for part in re.split(r"[()]", plain))
    return {form for form in map(normalize, (plain, bare_title(title), by_part)) if form.strip()}


def _article_first(part: str) -> str:
    match = _TRAILING_ARTICLE.match(part.strip())
    return f"{match.group(2)} {match.group(1)}" if match else part.strip()


def bare_title_mentions(answer: str) -> str:
    """The answer with MovieLens-style "Title, The" rewritten too, so a model that answers in the
    catalogue's own spelling ("Usual Suspects, The (1995)") names the item."""
    return re.sub(r"([^,.;:!?]+), (The|A|An)\b", r"\2 \1", answer)


def names_title_rate(answers: Sequence[str], titles: Sequence[str]) -> float:
    """Share of answers that name their item (nan for no answers)."""
    if not len(answers):
        return float("nan")
    return float(np.mean([names_title(a, t) for a, t in zip(answers, titles)]))
