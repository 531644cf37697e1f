"""Sentences built from item metadata: the targets of the pitch, profile and conversational tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence

from itemlm.data.text_views import SENTENCE_END

MAX_DESCRIPTION_CHARS = 300


def natural_join(words: Sequence[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b and c"."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in tuple("aeiou") else "a ") + phrase


_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def tag_phrase(tag: str) -> str:
    """A tag as it reads inside a sentence: "Sci-Fi" -> "sci-fi", "Skin Care" -> "skin care", "DVD" stays."""

    def lower(match: re.Match) -> str:
        word = match.group(0)
        return word.lower() if word[0].isupper() and word[1:] == word[1:].lower() else word

    return _WORD.sub(lower, tag)


def pitch_text(title: str, tags: Sequence[str], brand: str, domain: str) -> str:
    """"Heat (1995) is an action, crime and thriller film." / "Lash Blast is a mascara product by CoverGirl."."""
    noun = "film" if domain == "movies" else "product"
    kind = natural_join([tag_phrase(t) for t in tags])
    by = f" by {brand}" if brand else ""
    return f"{title} is {with_article(f'{kind} {noun}' if kind else noun)}{by}."


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
    noun = "film" if domain == "movies" else "product"

    def kind(tags: Sequence[str]) -> str:
        return with_article(natural_join([tag_phrase(t) for t in tags]) + " " + noun)

    if shared_tags:
        return f"Because it is also {kind(shared_tags)}."
    if own_tags:
        return f"Because it is {kind(own_tags)}."
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
