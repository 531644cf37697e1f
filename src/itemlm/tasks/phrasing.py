"""Sentences built from item metadata: the targets of the pitch, profile and conversational tasks."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from itemlm.data.text_views import SENTENCE_END

MAX_DESCRIPTION_CHARS = 300


def natural_join(words: Sequence[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b and c"."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def with_article(phrase: str) -> str:
    """"an action film", "a 1995 film", "an 1896 film" (said "eighteen ...")."""
    vowel_sound = phrase[:1].lower() in tuple("aeiou8") or phrase[:2] in ("11", "18")
    return ("an " if vowel_sound else "a ") + phrase


_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def tag_phrase(tag: str) -> str:
    """A tag as it reads inside a sentence: "Sci-Fi" -> "sci-fi", "Skin Care" -> "skin care", "DVD" stays."""

    def lower(match: re.Match) -> str:
        word = match.group(0)
        return word.lower() if word[0].isupper() and word[1:] == word[1:].lower() else word

    return _WORD.sub(lower, tag)


def capitalized(text: str) -> str:
    """The first letter upper-cased, the rest as written ("an action film" -> "An action film")."""
    return text[:1].upper() + text[1:]


def kind_phrase(tags: Sequence[str], domain: str, year: int | None = None) -> str:
    """"an action, crime and thriller film" / "a mascara product" / "a film" (no tags);
    with a year, "a 1995 action and crime film"."""
    noun = "film" if domain == "movies" else "product"
    words = [str(year)] if year is not None else []
    kind = natural_join([tag_phrase(t) for t in tags])
    return with_article(" ".join([*words, kind, noun] if kind else [*words, noun]))


_TITLE_YEAR = re.compile(r"\((\d{4})\)")


def title_year(text: str) -> int | None:
    """The year a title or an answer gives in parentheses, the last one ("Heat (1995)" -> 1995); None if none."""
    found = _TITLE_YEAR.findall(text)
    return int(found[-1]) if found else None


def read_tags(answer: str, known: Mapping[str, str], limit: int = 3) -> list[str]:
    """The tags a free answer names ("Comedy, Drama and Romance."), as the catalogue writes them:
    `known` maps a lowercase tag to its spelling; parts that are no tag and repeats are dropped;
    at most `limit`, in the answer's order."""
    found: list[str] = []
    for part in re.split(r"[,;/\n]|\band\b", answer):
        tag = known.get(part.strip().strip(".!").strip().lower())
        if tag and tag not in found:
            found.append(tag)
    return found[:limit]


def pitch_text(title: str, tags: Sequence[str], brand: str, domain: str) -> str:
    """"Heat (1995) is an action, crime and thriller film." / "Lash Blast is a mascara product by CoverGirl."."""
    by = f" by {brand}" if brand else ""
    return f"{title} is {kind_phrase(tags, domain)}{by}."


def profile_text(top_tags: Sequence[str], titles: Sequence[str], verb: str) -> str:
    """"Mostly drama, comedy and thriller; recently enjoyed Heat (1995), Fargo (1996) and Casino (1995).\""""
    parts = []
    if top_tags:
        parts.append("Mostly " + natural_join([tag_phrase(t) for t in top_tags]))
    if titles:
        parts.append(("recently " if parts else "Recently ") + f"{verb} {natural_join(titles)}")
    return "; ".join(parts) + "." if parts else "No history yet."


def reason_text(title: str, shared_tags: Sequence[str], own_tags: Sequence[str], domain: str) -> str:
    """"Heat (1995) — because it is also a crime film." (tags shared with the liked items), else the
    target's own tags ("because it is a crime film"), else the title alone."""
    why = why_text(shared_tags, own_tags, domain)
    return f"{title} — {why[0].lower()}{why[1:]}" if why else f"{title}."


def why_text(shared_tags: Sequence[str], own_tags: Sequence[str], domain: str) -> str:
    """"Because it is also a crime film." (tags shared with the liked items), else "Because it is a
    crime film." (the item's own tags), else "" (nothing to say)."""
    if shared_tags:
        return f"Because it is also {kind_phrase(shared_tags, domain)}."
    if own_tags:
        return f"Because it is {kind_phrase(own_tags, domain)}."
    return ""


def short_description(text: str, max_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    """Whole sentences up to `max_chars` (the first one cut at a word if it alone is longer)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    kept = ""
    for sentence in SENTENCE_END.split(text):
        if len(kept) + len(sentence) + 1 > max_chars:
            break
        kept = f"{kept} {sentence}".strip()
    return kept or text[:max_chars].rsplit(" ", 1)[0] + "..."
