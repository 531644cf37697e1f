"""A conversational recommender on top of an `ItemLanguageModel`: one class for the terminal and the server.

Each turn is read for what it asks:

- a question about an item ("what is Aladdin about?", "tell me about Heat") is answered with the
  model's own description of it;
- titles the person liked or disliked ("I loved Heat but hated Casino") update the preferences;
  titles are matched loosely (case, punctuation, a missing year or a leading "The" do not matter)
  and close misspellings are suggested, never an exception;
- refinements ("less violent", "something newer", "older", "more comedy", "nothing scary",
  "less childish", "funnier") narrow the list; a genre is understood by its name and by the
  words people use for it (`GENRE_WORDS`), with "more"/"less" read from the words before it;
- refinements before any title ("a comedy, please") get the most watched items that fit, said
  to be that, until a title names the person's taste;
- "the second one", "#3", "number 2", "the last one" stand for that item of the last list
  ("what is the first one about?", "I liked the second one"), and "why the third one?" gets
  the reason given for it (or the model's reason for any other title).

Preferences and everything already shown are kept across turns: a list never repeats an item,
nor lists one the person named or disliked, and a later list brings new items. Lists come from
the model's ranking mode when it has a ranker, else from decoding constrained to catalogue
titles, so every item named is a catalogue item; each reason is text the model generated.
The whole state is plain data (`state()` / `from_state()`), so a server can store it anywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from itemlm.chat.titles import TitleIndex
from itemlm.models.ilm import ItemLanguageModel

VIOLENT = {"action", "war", "crime", "horror", "thriller"}
LIGHT_WORDS = ("less violent", "lighter", "no violence", "not violent", "gentler", "family")
NEWER_WORDS = ("newer", "more recent", "recent", "modern")
OLDER_WORDS = ("older", "classic", "vintage")
# Words people use for the genres of MovieLens-style catalogues, besides the genre's own name; a genre the
# catalogue does not carry is never read, and any other catalogue's tags are understood by their names.
GENRE_WORDS = {
    "action": ("action-packed",),
    "animation": ("animated", "animation", "cartoon", "cartoons", "anime"),
    "children's": ("childish", "kids", "children", "childrens", "children's"),
    "comedy": ("funny", "funnier", "comedies", "comic", "comedic", "humor", "humour"),
    "crime": ("gangster", "gangsters", "heist", "mafia"),
    "documentary": ("documentaries",),
    "drama": ("dramas", "dramatic"),
    "fantasy": ("magic", "magical"),
    "film-noir": ("noir",),
    "horror": ("scary", "scarier", "creepy", "spooky", "gory", "horrors"),
    "musical": ("musicals",),
    "mystery": ("mysteries", "whodunit", "whodunnit"),
    "romance": ("romantic", "romances", "love story", "love stories", "romcom", "romcoms"),
    "sci-fi": ("science fiction", "scifi", "sci fi"),
    "thriller": ("thrillers", "suspense", "suspenseful", "thrilling"),
    "war": ("military",),
    "western": ("westerns", "cowboy", "cowboys"),
}
COMPARATIVES = ("funnier", "scarier")  # "more" by themselves
LESS_BEFORE = (r"\b(?:less|no|not|without|fewer|nothing|too|never|avoid|skip|enough|tired of|not in the mood for"
               r"|don'?t want|do not want)(?:\s+(?:so|as|too|the|any|more|of|a|an|for|with))*\s+$")
MORE_BEFORE = r"\b(?:more|some|a|an|with|something|any|another|for|want)(?:\s+(?:bit|little|more|of|the|good|great|really))*\s+$"
MORE_AFTER = r"^\s+(?:please|instead|movies?|films?|ones?|stuff)\b"
MODIFIER_REACH = 80  # characters around a genre word that LESS_BEFORE, MORE_BEFORE and MORE_AFTER read


@functools.lru_cache(maxsize=None)
def genre_pattern(tag: str) -> re.Pattern:
    """Any word people use for the genre, as a whole word (a hyphen joins words); compiled once per tag."""
    words = dict.fromkeys((tag, *GENRE_WORDS.get(tag, ())))
    return re.compile("|".join(rf"(?<![\w-]){re.escape(word)}(?![\w-])" for word in words))


DISLIKE = re.compile(
    r"\b(hated?|disliked?|didn'?t like|did not like|don'?t like|do not like|not a fan of|can'?t stand|boring|awful|no more"
    r"|not|except|anything but|other than|apart from|without)\b"
)
SENTIMENT = r"(?:i\s+)?(?:hated?|disliked?|loved?|liked?|enjoyed|adored|didn'?t|did not|don'?t|do not|can'?t|could not|couldn'?t)\b"
# Clauses: at "but" (not "anything but"), sentence ends (not the dots of "L.A." or "Mr."), a comma
# before "I", "while", "whereas", and "and" or a comma right before a verb of taste ("I loved Heat
# and hated Casino"); an "and" inside a title ("Sense and Sensibility") is followed by no such verb.
CLAUSES = re.compile(
    rf"(?<!anything )(?<!all )\bbut\b|[;!?]|(?<!\b\w)(?<!\bmr)(?<!\bmrs)(?<!\bms)(?<!\bdr)(?<!\bst)(?<!\bjr)(?<!\bvs)\.(?=\s|$)"
    rf"|, *(?:and )?(?=i\b)|\bwhile\b|\bwhereas\b|(?:,\s*|\s+and\s+)(?={SENTIMENT})",
    re.IGNORECASE,
)
MORE = re.compile(r"\b(something else|anything else|more|another|others|again|next|other (?:ones|titles|films|movies|items|suggestions))\b")
ORDINAL_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
                 "ninth": 9, "tenth": 10, "last": 0}
REFERENCE = re.compile(  # "the second one", "the 3rd movie", "number 2", "#2": an item of the last list
    rf"\b(?:the\s+)?(?:({'|'.join(ORDINAL_WORDS)})|(\d{{1,2}})(?:st|nd|rd|th))\s+(?:one|title|film|movie|item|pick|suggestion|product)\b"
    r"|(?:\bnumber\s+|#)(\d{1,2})\b",
    re.IGNORECASE,
)
WHY = re.compile(r"^\W*(?:and\s+|but\s+)?why\b", re.IGNORECASE)
WHY_NOT = re.compile(r"\bwhy\s+(?:not|no|didn'?t you|did you not|haven'?t you)\b", re.IGNORECASE)
LISTED = re.compile(r"^\s*\d+\.\s+(.+)$", re.MULTILINE)  # "1. Heat (1995) — ..." in an answer
UNREAD_NOTE = "(No text about this title was in my training: this is a guess from how people watch it.)"
QUESTION = re.compile(r"\b(what is|what's|whats|what was)\b.*\babout\b|\b(tell me (more )?about|describe)\b")
HELP = (
    "Name a few titles you liked (e.g. 'I loved Heat and Casino') or disliked ('I hated Casino'), "
    "ask about one ('what is Aladdin about?'), then refine: 'less violent', 'something newer', "
    "'older', 'more comedy', 'nothing scary'; 'why the first one?'. 'reset' starts over, 'quit' leaves."
)


@dataclass
class Preferences:
    liked: list[int] = field(default_factory=list)
    disliked: list[int] = field(default_factory=list)
    avoid_tags: set[str] = field(default_factory=set)
    want_tags: set[str] = field(default_factory=set)
    min_year: int | None = None
    max_year: int | None = None


@dataclass
class Recommendation:
    item: int  # the catalogue index
    title: str
    score: float
    reason: str  # the model's words, starting with the title


@dataclass
class Reply:
    text: str
    kind: str  # "recommendations", "description", "reason", "help" or "unknown"
    items: list[Recommendation] = field(default_factory=list)  # recommended, in order
    about: int | None = None  # the item described or explained, for "description" and "reason"


class ChatSession:
    def __init__(self, model: ItemLanguageModel, k: int = 5, candidates: int = 30, index: TitleIndex | None = None,
                 max_new_tokens: int = 48):
        self.model = model
        self.k = k
        self.candidates = candidates
        self.max_new_tokens = max_new_tokens  # a description's length; a reason gets at most 24 tokens
        self.index = index or TitleIndex(model.catalogue)
        self.tags, self.years, self.all_tags = self.index.tags, self.index.years, self.index.all_tags
        self.find_titles, self.suggestions = self.index.find_titles, self.index.suggestions
        self.prefs = Preferences()
        self.shown: list[int] = []  # every item already recommended in this conversation
        self.turns: list[dict] = []  # {"role": "user"|"assistant", "content": ..., "items": [...]}

    # -------------------------------------------------------------- state
    def state(self) -> dict:
        """The conversation as JSON-ready data: preferences, items shown, turns."""
        prefs = asdict(self.prefs)
        prefs["avoid_tags"], prefs["want_tags"] = sorted(self.prefs.avoid_tags), sorted(self.prefs.want_tags)
        return {"prefs": prefs, "shown": list(self.shown), "turns": list(self.turns)}

    def load_state(self, state: dict) -> "ChatSession":
        prefs = dict(state.get("prefs") or {})
        prefs["avoid_tags"], prefs["want_tags"] = set(prefs.get("avoid_tags", ())), set(prefs.get("want_tags", ()))
        self.prefs = Preferences(**prefs)
        self.shown, self.turns = list(state.get("shown", [])), list(state.get("turns", []))
        return self

    def reset(self) -> None:
        self.prefs, self.shown = Preferences(), []

    def absorb(self, messages: list[dict]) -> None:
        """Take in earlier turns of a conversation held elsewhere (an OpenAI client sends them all):
        what the person's messages said about titles and constraints, without answering them."""
        for message in messages:
            role, text = message.get("role"), str(message.get("content", "")).strip()
            if role not in ("user", "assistant"):
                continue
            self.turns.append({"role": role, "content": text, "items": []})
            if role == "user" and text.lower() == "reset":
                self.reset()
            elif role == "user" and self.asks_about(text) is None:
                self.take_opinions(text)
            elif role == "assistant":  # what an earlier answer listed counts as shown: a list never repeats it
                for item in self.listed_in(text):
                    self.shown += [twin for twin in self.index.twins(item) if twin not in self.shown]

    def take_opinions(self, text: str) -> tuple[list[int], list[int], list[str]]:
        """Apply what a message says: titles liked and disliked, refinements. Returns them."""
        liked, disliked = self.opinions(text)
        for item in liked:
            self.like(item)
        for item in disliked:
            self.dislike(item)
        return liked, disliked, self.refine(text)

    # -------------------------------------------------------------- understanding the message
    def listed_in(self, answer: str) -> list[int]:
        """The items an answer's text lists ("1. Heat (1995) — because ..."): a reason starts with its title."""
        named = (self.find_titles(re.split(r" — | - |\bbecause\b", line)[0]) for line in LISTED.findall(answer))
        return [found[0] for found in named if found]

    def last_listed(self) -> list[int]:
        """The items of the last list answered, in order (read from its text when a client sent it)."""
        for turn in reversed(self.turns):
            if turn.get("role") != "assistant":
                continue
            if turn.get("items"):
                return [int(r["item"]) for r in turn["items"]]
            if LISTED.search(turn.get("content", "")):
                return self.listed_in(turn["content"])
        return []

    def resolve_references(self, text: str) -> str:
        """The text with "the second one", "#3", "the last one" replaced by the titles they point to.
        "#3" and "number 3" count only in a message that names no title ("Shade #2" may be part of one)."""
        listed = self.last_listed() if REFERENCE.search(text) else []
        if not listed:
            return text

        names_a_title = functools.cache(lambda: bool(self.find_titles(text)))  # read once, only if a "#3" needs it

        def title(match: re.Match) -> str:
            word, ordinal, number = match.groups()
            if number and names_a_title():
                return match.group(0)
            position = ORDINAL_WORDS[word.lower()] if word else int(ordinal or number)
            position = len(listed) if position == 0 else position
            return self.model.catalogue.titles[listed[position - 1]] if 1 <= position <= len(listed) else match.group(0)

        return REFERENCE.sub(title, text)

    def asks_about(self, text: str) -> int | None:
        """The item a question is about ("what is Aladdin about?", "tell me about Heat"), if it is one."""
        if not QUESTION.search(text.lower()):
            return None
        mentioned, rest = self.index.read(text)
        return mentioned[0] if mentioned and not DISLIKE.search(rest) else None

    def opinions(self, text: str) -> tuple[list[int], list[int]]:
        """(liked, disliked) items named in the text: a title in a clause with a negative verb
        ("hated", "didn't like", "not a fan of") is disliked, any other named title is liked."""
        liked: list[int] = []
        disliked: list[int] = []
        for clause in CLAUSES.split(text):
            if clause:
                named, rest = self.index.read(clause)
                (disliked if DISLIKE.search(rest) else liked).extend(named)
        disliked = list(dict.fromkeys(disliked))
        return [i for i in dict.fromkeys(liked) if i not in disliked], disliked

    def refine(self, text: str) -> list[str]:
        lowered = self.index.without_titles(text)  # words of titles are not requests
        notes = []

        def says(words) -> bool:
            return any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words)

        if says(LIGHT_WORDS):
            self.prefs.avoid_tags |= VIOLENT & set(self.all_tags)
            notes.append("nothing violent")
        liked_years = [self.years[i] for i in self.prefs.liked if self.years[i]]
        if says(NEWER_WORDS):
            self.prefs.min_year, self.prefs.max_year = (max(liked_years) if liked_years else None), None
            notes.append(f"newer than {self.prefs.min_year}" if self.prefs.min_year else "newer")
        if says(OLDER_WORDS):
            self.prefs.max_year, self.prefs.min_year = (min(liked_years) if liked_years else None), None
            notes.append(f"older than {self.prefs.max_year}" if self.prefs.max_year else "older")
        for tag in self.all_tags:
            wanted = self.genre_request(tag, lowered)
            if wanted is True:
                self.prefs.want_tags.add(tag)
                self.prefs.avoid_tags.discard(tag)
                notes.append(f"with {tag}")
            elif wanted is False:
                self.prefs.avoid_tags.add(tag)
                self.prefs.want_tags.discard(tag)
                notes.append(f"no {tag}")
        return notes

    @staticmethod
    def genre_request(tag: str, lowered: str) -> bool | None:
        """True when the text asks for more of the genre ("more comedy", "something funny", "funnier",
        "a western please"), False for less of it ("less childish", "no horror", "nothing too scary"),
        None when it does not speak of it. Plain mentions ("I watched it with my kids") are neither."""
        answer = None
        for match in genre_pattern(tag).finditer(lowered):
            before, after = lowered[: match.start()], lowered[match.end():]
            near = before[-MODIFIER_REACH:]  # the words just before the genre: a long message is not scanned once per mention
            if re.search(LESS_BEFORE, near):
                return False
            alone = not before.strip(" ,.!?") and not after.strip(" ,.!?")  # the message is just "comedy"
            if alone or match.group(0) in COMPARATIVES or re.search(MORE_BEFORE, near) or re.search(MORE_AFTER, after[:MODIFIER_REACH]):
                answer = True
        return answer

    def acceptable(self, item: int) -> bool:
        tags, year, p = self.tags[item], self.years[item], self.prefs
        if tags & p.avoid_tags or (p.want_tags and not tags & p.want_tags):
            return False
        if p.min_year and (year is None or year <= p.min_year):
            return False
        return not (p.max_year and (year is None or year >= p.max_year))

    # -------------------------------------------------------------- acting on it
    def like(self, item: int) -> None:
        self.prefs.disliked = [i for i in self.prefs.disliked if i != item]
        if item not in self.prefs.liked:
            self.prefs.liked.append(item)

    def dislike(self, item: int) -> None:
        self.prefs.liked = [i for i in self.prefs.liked if i != item]
        if item not in self.prefs.disliked:
            self.prefs.disliked.append(item)

    def active_constraints(self) -> list[str]:
        p = self.prefs
        notes = [f"no {', '.join(sorted(p.avoid_tags))}"] if p.avoid_tags else []
        notes += [f"with {', '.join(sorted(p.want_tags))}"] if p.want_tags else []
        notes += [f"newer than {p.min_year}"] if p.min_year else []
        notes += [f"older than {p.max_year}"] if p.max_year else []
        return notes

    def candidates_in_order(self) -> list[tuple[int, float]]:
        """Up to k distinct (item, score) that pass the constraints and were neither named nor shown.
        Ranking mode when the model has a ranker, else constrained decoding."""
        banned = set(self.prefs.liked) | set(self.prefs.disliked) | set(self.shown)
        chosen: dict[int, float] = {}
        for width in (self.candidates, 4 * self.candidates):  # widen once when the filters leave too few
            ranked = self.model.recommend(history=self.prefs.liked, k=width, exclude=sorted(banned))
            chosen = {}
            for item, _, score in ranked:  # one line per title: items listed under the same title are one
                if item not in banned and not set(self.index.twins(item)) & chosen.keys() and self.acceptable(item):
                    chosen[item] = score
            if len(chosen) >= self.k:
                break
        return list(chosen.items())[: self.k]

    def popular_picks(self) -> list[int]:
        """Up to k of the most watched items that pass the constraints and were not shown or disliked."""
        banned, picks = set(self.prefs.disliked) | set(self.shown), []
        for item in self.index.by_popularity:
            if item not in banned and self.acceptable(item) and not set(self.index.twins(item)) & set(picks):
                picks.append(item)
                if len(picks) == self.k:
                    break
        return picks

    def _answer_with_popular(self):
        """The answer to refinements before any title: popular items that fit, said to be that."""
        titles = self.model.catalogue.titles
        popular = "most watched" if self.model.catalogue.domain == "movies" else "most popular"
        picks = self.popular_picks()
        self.shown += [twin for item in picks for twin in self.index.twins(item)]
        lines = [f"Keeping to: {'; '.join(self.active_constraints())}." if self.active_constraints() else "",
                 f"You have not named a title you liked yet, so these are the {popular} that fit; name a few you liked "
                 "and I will recommend for your taste:"]
        listed = [f"{rank}. {titles[item]}" for rank, item in enumerate(picks, start=1)]
        listed = listed or ["Nothing in my catalogue fits all of that; try 'reset' or fewer constraints."]
        text = "\n".join([line for line in lines if line] + listed)
        yield text
        popularity = self.index.log_popularity
        return Reply(text, "recommendations", [Recommendation(item, titles[item], float(popularity[item]), f"{titles[item]} — one of the {popular}.")
                                               for item in picks])

    def recommendations(self) -> list[Recommendation]:
        """The next list, each with the model's own reason; the items count as shown from now on."""
        picks = self.candidates_in_order()
        reasons = self.model.explain(self.prefs.liked, [item for item, _ in picks], min(24, self.max_new_tokens))
        self.shown += [twin for item, _ in picks for twin in self.index.twins(item)]
        return [Recommendation(item, self.model.catalogue.titles[item], score, reason) for (item, score), reason in zip(picks, reasons)]

    def reason_for(self, item: int) -> str:
        """Why `item` was recommended: the reason its list gave, else the model's reason now."""
        for turn in reversed(self.turns):
            for listed in turn.get("items") or ():
                if int(listed["item"]) == item and listed.get("reason"):
                    return listed["reason"]
        if not self.prefs.liked:
            return f"{self.model.catalogue.titles[item]} was not recommended for your taste yet: name a few titles you liked."
        return self.model.explain(self.prefs.liked, [item], min(24, self.max_new_tokens))[0]

    def describe(self, item: int, max_new_tokens: int | None = None) -> str:
        """The model's own answer to "What is <item> about?" (a training prompt of item_description);
        for an item whose text it never read, the year and genres it reads from the item's vectors."""
        return self.model.describe(item, max_new_tokens or self.max_new_tokens)

    # -------------------------------------------------------------- answering
    def respond(self, text: str) -> Reply:
        """Read one message, update the conversation, answer it."""
        for _ in self.respond_stream(text):
            pass
        return self.last_reply

    def respond_stream(self, text: str) -> Iterator[str]:
        """The answer to one message in pieces, each as soon as it is known: what was understood
        first, then what the model generated. The whole answer is `last_reply` afterwards."""
        text = text.strip()
        reply: Reply = yield from self._answer(text)
        self.last_reply = reply
        self.turns += [{"role": "user", "content": text},
                       {"role": "assistant", "content": reply.text, "items": [asdict(r) for r in reply.items]}]

    def _answer(self, text: str):
        """Yields the answer's text in pieces and returns the `Reply`."""
        lowered = text.lower()
        if not text or lowered in ("help", "?"):
            yield HELP
            return Reply(HELP, "help")
        if lowered == "reset":
            self.reset()
            yield "Starting over. " + HELP
            return Reply("Starting over. " + HELP, "help")
        titles = self.model.catalogue.titles
        text = self.resolve_references(text)
        if WHY.search(text):
            named, _ = self.index.read(text)
            if named and WHY_NOT.search(text) and named[0] not in self.last_listed():
                reason = (f"I did not list {titles[named[0]]}: other titles scored higher for your taste. "
                          "Say you liked it, and I will recommend from it too.")
                yield reason
                return Reply(reason, "reason", about=named[0])
            if named:
                reason = self.reason_for(named[0])
                yield reason
                return Reply(reason, "reason", about=named[0])
        item = self.asks_about(text)
        if item is not None:
            yield f"{titles[item]}: "
            answer = self.describe(item)
            if self.model.catalogue.text_held_out[item]:
                answer += f" {UNREAD_NOTE}"
            yield answer
            return Reply(f"{titles[item]}: {answer}", "description", about=item)
        liked, disliked, notes = self.take_opinions(text)
        if not self.prefs.liked and (notes or (self.active_constraints() and MORE.search(lowered))):
            return (yield from self._answer_with_popular())
        if disliked and not self.prefs.liked:
            message = f"Noted: not {', '.join(titles[i] for i in disliked)}. Name a few titles you liked and I will recommend for your taste."
            yield message
            return Reply(message, "help")
        if not self.prefs.liked or (not liked and not disliked and not notes and not MORE.search(lowered)):
            close = self.suggestions(text)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            message = f"I could not find a title I know in that.{hint} " + HELP
            yield message
            return Reply(message, "unknown")
        lines = []
        if liked:
            lines.append(f"You liked {', '.join(titles[i] for i in liked)}.")
        if disliked:
            lines.append(f"Noted: not {', '.join(titles[i] for i in disliked)}.")
        if self.active_constraints():
            lines.append(f"Keeping to: {'; '.join(self.active_constraints())}.")
        if lines:
            yield "\n".join(lines) + "\n"
        picks = self.recommendations()
        listed = [f"{rank}. {pick.reason}" for rank, pick in enumerate(picks, start=1)]
        listed = listed or ["Nothing new in my catalogue fits all of that; try 'reset' or fewer constraints."]
        yield "\n".join(listed)
        return Reply("\n".join(lines + listed), "recommendations", picks)
