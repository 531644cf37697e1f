"""Finding catalogue items by what people type: loose title matching, fuzzy search, tags and years.

Built once per model and shared by every conversation (the terminal chat, each server session).
"""

from __future__ import annotations

import difflib
import re

import numpy as np

from itemlm.data.item_text import normalize_title
from itemlm.models.catalogue import Catalogue


MAX_SUGGESTION_CHUNKS = 8  # pieces of a message looked up by spelling (each costs a pass over the catalogue)


def _tags(value: str) -> list[str]:
    return [t.strip() for t in str(value or "").split(",") if t.strip()]


class TitleIndex:
    def __init__(self, catalogue: Catalogue):
        self.titles = catalogue.titles
        items = catalogue.items
        self.tags = [set(t.lower() for t in _tags(row.get("genres") or row.get("categories"))) for row in items.to_dict("records")]
        self.years = [int(y) if str(y).isdigit() else None for y in items["year"]]
        self.all_tags = sorted({t for tags in self.tags for t in tags})
        self.by_name: dict[str, list[int]] = {}
        for index, title in enumerate(items["title"]):
            for key in {normalize_title(str(title)), normalize_title(self.titles[index])}:
                if key:
                    self.by_name.setdefault(key, []).append(index)
        self.names = sorted(self.by_name, key=len, reverse=True)
        # the names that start with each word, longest first: a text is checked only against the
        # names whose first word it holds, so reading a message costs its words, not the catalogue
        self.names_by_first_word: dict[str, list[str]] = {}
        for name in self.names:
            self.names_by_first_word.setdefault(name.split(" ", 1)[0], []).append(name)
        self.name_rank = {name: rank for rank, name in enumerate(self.names)}
        self.by_title: dict[str, list[int]] = {}  # items listed under the very same title (MovieLens has 18 such pairs)
        for index, title in enumerate(self.titles):
            self.by_title.setdefault(title, []).append(index)
        # most training interactions first (ties by index): what to offer someone who named no title yet
        self.log_popularity = catalogue.log_popularity()
        self.by_popularity = np.argsort(-self.log_popularity, kind="stable").tolist()

    def twins(self, item: int) -> list[int]:
        """The item and every other item listed under the very same title (and year)."""
        return self.by_title[self.titles[item]]

    def find_titles(self, text: str) -> list[int]:
        """Catalogue items named in the text: quoted titles first, then the longest titles found in
        it. A title names every item listed under it; of titles that differ only in their year
        ("Cape Fear (1962)", "(1991)"), the first in the catalogue."""
        return self.read(text)[0]

    def without_titles(self, text: str) -> str:
        """The text, normalized, with the titles it names taken out (so that "Swiss Family Robinson"
        does not read as a wish for family films)."""
        return self.read(text)[1]

    def read(self, text: str) -> tuple[list[int], str]:
        """`find_titles` and `without_titles` of the text, in one pass over the catalogue's names."""
        found: list[int] = []
        quoted = re.findall(r"[\"“']([^\"”']{2,})[\"”']", text)
        for name in quoted:
            found += self.by_name.get(normalize_title(name), [])[:1]
        normalized = f" {normalize_title(text)} "
        candidates = {name for word in set(normalized.split()) for name in self.names_by_first_word.get(word, ())}
        for name in sorted(candidates, key=self.name_rank.__getitem__):  # longest first, as in self.names
            if len(name) >= 3 and f" {name} " in normalized:
                found.append(self.by_name[name][0])
                normalized = normalized.replace(f" {name} ", " | ")
        return list(dict.fromkeys(twin for item in found for twin in self.twins(item))), normalized

    def suggestions(self, text: str, n: int = 3) -> list[str]:
        """Titles close to the pieces of a message that named none (misspellings)."""
        chunks = re.split(r",|;| and | or |\bloved\b|\bliked\b|\benjoyed\b|\babout\b", text.lower())
        keys = [key for key in map(normalize_title, chunks) if len(key) >= 3][:MAX_SUGGESTION_CHUNKS]
        names: list[str] = []
        for key in keys:  # each is compared with every name: a long message is read for its first few pieces only
            names += difflib.get_close_matches(key, self.by_name, n=n, cutoff=0.6)
        return [self.titles[self.by_name[name][0]] for name in dict.fromkeys(names)][:n]

    def search(self, query: str, limit: int = 10) -> list[int]:
        """Items for a search box: exact title first, then titles holding every word, then close spellings."""
        key = normalize_title(query)
        if not key:
            return []
        found = list(self.by_name.get(key, []))
        words = key.split()
        found += [i for name in self.names if all(w in name.split() or (len(w) >= 3 and w in name) for w in words) for i in self.by_name[name]]
        found += [i for name in difflib.get_close_matches(key, self.by_name, n=limit, cutoff=0.6) for i in self.by_name[name]]
        return list(dict.fromkeys(found))[:limit]
