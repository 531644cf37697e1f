"""A conversational recommender on top of an `ItemLanguageModel`.

The person names items by title (matched loosely: case, punctuation, a missing year or a leading
"The" do not matter, and close misspellings are suggested), gets top-5 recommendations from the
model's constrained decoding with a short reason for each, and can refine them ("less violent",
"something newer", "more comedy"). Unknown titles get suggestions, never an exception.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from itemlm.data.item_text import normalize_title
from itemlm.models.ilm import ItemLanguageModel

VIOLENT = {"action", "war", "crime", "horror", "thriller"}
LIGHT_WORDS = ("less violent", "lighter", "no violence", "not violent", "gentler", "family")
NEWER_WORDS = ("newer", "more recent", "recent", "modern")
OLDER_WORDS = ("older", "classic", "vintage")
HELP = (
    "Name a few titles you liked (e.g. 'I loved Heat and Casino'), then refine: 'less violent', "
    "'something newer', 'older', 'more comedy'. 'reset' starts over, 'quit' leaves."
)


def _tags(value: str) -> list[str]:
    return [t.strip() for t in str(value or "").split(",") if t.strip()]


@dataclass
class Preferences:
    liked: list[int] = field(default_factory=list)
    avoid_tags: set[str] = field(default_factory=set)
    want_tags: set[str] = field(default_factory=set)
    min_year: int | None = None
    max_year: int | None = None


class ChatSession:
    def __init__(self, model: ItemLanguageModel, k: int = 5, candidates: int = 30):
        self.model = model
        self.k = k
        self.candidates = candidates
        self.prefs = Preferences()
        items = model.catalogue.items
        self.tags = [set(t.lower() for t in _tags(row.get("genres") or row.get("categories"))) for row in items.to_dict("records")]
        self.years = [int(y) if str(y).isdigit() else None for y in items["year"]]
        self.all_tags = sorted({t for tags in self.tags for t in tags})
        self.by_name: dict[str, list[int]] = {}
        for index, title in enumerate(items["title"]):
            for key in {normalize_title(str(title)), normalize_title(model.catalogue.titles[index])}:
                if key:
                    self.by_name.setdefault(key, []).append(index)
        self.names = sorted(self.by_name, key=len, reverse=True)

    # -------------------------------------------------------------- understanding the message
    def find_titles(self, text: str) -> list[int]:
        """Catalogue items named in the text: quoted titles first, then the longest titles found in it."""
        found: list[int] = []
        quoted = re.findall(r"[\"“']([^\"”']{2,})[\"”']", text)
        for name in quoted:
            found += self.by_name.get(normalize_title(name), [])[:1]
        normalized = f" {normalize_title(text)} "
        for name in self.names:
            if len(name) >= 3 and f" {name} " in normalized:
                found.append(self.by_name[name][0])
                normalized = normalized.replace(f" {name} ", " | ")
        return list(dict.fromkeys(found))

    def suggestions(self, text: str, n: int = 3) -> list[str]:
        chunks = re.split(r",|;| and | or |\bloved\b|\bliked\b|\benjoyed\b", text.lower())
        names: list[str] = []
        for chunk in chunks:
            key = normalize_title(chunk)
            if len(key) >= 3:
                names += difflib.get_close_matches(key, self.by_name, n=n, cutoff=0.6)
        return [self.model.catalogue.titles[self.by_name[name][0]] for name in dict.fromkeys(names)][:n]

    def refine(self, text: str) -> list[str]:
        lowered = text.lower()
        notes = []
        if any(w in lowered for w in LIGHT_WORDS):
            self.prefs.avoid_tags |= VIOLENT & set(self.all_tags)
            notes.append("nothing violent")
        liked_years = [self.years[i] for i in self.prefs.liked if self.years[i]]
        if any(w in lowered for w in NEWER_WORDS):
            self.prefs.min_year, self.prefs.max_year = (max(liked_years) if liked_years else None), None
            notes.append(f"newer than {self.prefs.min_year}" if self.prefs.min_year else "newer")
        if any(w in lowered for w in OLDER_WORDS):
            self.prefs.max_year, self.prefs.min_year = (min(liked_years) if liked_years else None), None
            notes.append(f"older than {self.prefs.max_year}" if self.prefs.max_year else "older")
        for tag in self.all_tags:
            if re.search(rf"\b(more|some|a|an|with)\s+{re.escape(tag)}", lowered) or re.search(rf"\b{re.escape(tag)}\s+(please|instead)", lowered):
                self.prefs.want_tags.add(tag)
                self.prefs.avoid_tags.discard(tag)
                notes.append(f"with {tag}")
        return notes

    def acceptable(self, item: int) -> bool:
        tags, year, p = self.tags[item], self.years[item], self.prefs
        if tags & p.avoid_tags or (p.want_tags and not tags & p.want_tags):
            return False
        if p.min_year and (year is None or year <= p.min_year):
            return False
        return not (p.max_year and (year is None or year >= p.max_year))

    # -------------------------------------------------------------- answering
    def active_constraints(self) -> list[str]:
        p = self.prefs
        notes = [f"no {', '.join(sorted(p.avoid_tags))}"] if p.avoid_tags else []
        notes += [f"with {', '.join(sorted(p.want_tags))}"] if p.want_tags else []
        notes += [f"newer than {p.min_year}"] if p.min_year else []
        notes += [f"older than {p.max_year}"] if p.max_year else []
        return notes

    def recommendations(self) -> list[tuple[int, str]]:
        """Up to k distinct items that pass the constraints, never one the person named, each with
        the model's own reason. Ranking mode when the model has a ranker, else constrained decoding."""
        chosen: list[int] = []
        for width in (self.candidates, 4 * self.candidates):  # widen once when the filters leave too few
            ranked = self.model.recommend(history=self.prefs.liked, k=width)
            chosen = list(dict.fromkeys(item for item, _, _ in ranked if self.acceptable(item) and item not in self.prefs.liked))[: self.k]
            if len(chosen) == self.k or not self.active_constraints():
                break
        return list(zip(chosen, self.model.explain(self.prefs.liked, chosen)))

    def respond(self, text: str) -> str:
        text = text.strip()
        if not text:
            return HELP
        if text.lower() in ("help", "?"):
            return HELP
        if text.lower() == "reset":
            self.prefs = Preferences()
            return "Starting over. " + HELP
        mentioned = self.find_titles(text)
        named = [i for i in mentioned if i not in self.prefs.liked]
        self.prefs.liked += named
        notes = self.refine(text)
        if not self.prefs.liked or (not mentioned and not notes):
            close = self.suggestions(text)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            return f"I could not find a title I know in that.{hint} " + HELP
        picks = self.recommendations()
        heard = [self.model.catalogue.titles[i] for i in named]
        lines = []
        if heard:
            lines.append(f"You liked {', '.join(heard)}.")
        if notes or self.active_constraints():
            lines.append(f"Keeping to: {'; '.join(self.active_constraints())}.")
        if not picks:
            lines.append("Nothing in my catalogue fits all of that; try 'reset' or fewer constraints.")
        for rank, (_, reason) in enumerate(picks, start=1):
            lines.append(f"{rank}. {reason}")
        return "\n".join(lines)
