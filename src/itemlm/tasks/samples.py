"""Stage-2 task samples: (prompt with placeholders, target text) pairs built from a dataset and a split.

What each task's target is built from, and what it may not see:
- item_title / item_genres / item_description / item_pitch: the subject item's metadata. Training
  uses only items whose text is not held out; evaluation covers every item and marks the held-out
  ones (`Sample.text_held_out_subject`), so the two groups can be scored apart.
- user_profile: the user's *training* history (top tags, a few recent titles), at every stage.
- sequential / straightforward / conversational: training targets are positions inside a user's
  training sequence with only the items before them as context; validation and test targets are
  the split's, with everything the user had consumed before them as context. Validation and test
  items never appear in a training sample.

Everything is a pure function of the seed: each (stage, task, purpose) draws from its own numpy
Generator, seeded with stable integers (CRC-32 of the names, never Python's salted `hash`), so the
same subjects are chosen whichever prompt set ("seen"/"unseen") is asked for.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from itemlm.data.dataset import InteractionDataset
from itemlm.data.splits import Split
from itemlm.data.text_views import SENTENCE_END, display_title
from itemlm.errors import InputError
from itemlm.tasks.templates import (
    ITEM_TASKS,
    PROMPT_SETS,
    TASKS,
    TRAINING_TASKS,
    find_placeholders,
    infer_domain,
    item_placeholder,
    templates_for,
    user_placeholder,
)

STAGES = ("train", "valid", "test")
PLACEHOLDER_TAGS = frozenset({"", "unknown", "(no genres listed)", "none", "n/a"})
"""Genre values that mean "no genre" (MovieLens writes "unknown" and "(no genres listed)")."""
COMMON_TAG_SHARE = 0.5
"""Products only: a category carried by more than this share of items (Amazon's root, "Beauty") says
nothing about an item, so pitches, profiles and reasons leave it out."""
HIGH_RATING = 0.8
"""A rating at or above this fraction of the dataset's highest rating counts as "liked" (4 of 5)."""
LIKED_WINDOW = 10
"""Conversational requests mention items from the user's last this-many interactions."""
MAX_DESCRIPTION_CHARS = 300


@dataclass(frozen=True)
class Sample:
    """One stage-2 example. `prompt` holds `<item:i>`/`<user:u>` placeholders; `target` is plain text.

    item: the subject item of an item-to-text task; user: the user the sample is about;
    target_item: the item a recommendation task should name (its title starts `target`).
    """

    task: str
    template: str
    prompt: str
    target: str
    item: int | None = None
    user: int | None = None
    target_item: int | None = None
    held_out_prompt: bool = False
    text_held_out_subject: bool = False
    candidates: tuple[int, ...] = ()  # ranking: the retriever's candidates, in the prompt's order
    candidate_scores: tuple[float, ...] = ()  # ranking: their retriever scores

    def prompt_items(self) -> list[int]:
        """Item indices named in the prompt, in order."""
        return [index for kind, index, _, _ in find_placeholders(self.prompt) if kind == "item"]


# --- Text built from metadata ------------------------------------------------------------------


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
    noun = "film" if domain == "movies" else "product"

    def kind(tags: Sequence[str]) -> str:
        return with_article(natural_join([tag_phrase(t) for t in tags]) + " " + noun)

    if shared_tags:
        return f"{title} — because it is also {kind(shared_tags)}."
    if own_tags:
        return f"{title} — because it is {kind(own_tags)}."
    return f"{title}."


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


@dataclass
class ItemFacts:
    """Per item (index order), the metadata targets are built from; computed once per dataset."""

    titles: list[str]  # "Title (Year)"
    has_title: np.ndarray  # bool
    tag_field: list[str]  # genres (else categories) as written, placeholders removed
    tags: list[list[str]]  # informative tags: for pitches, profiles and reasons
    tag_share: dict[str, float]  # fraction of items carrying each tag
    brands: list[str]
    descriptions: list[str]
    held_out: np.ndarray  # bool: text held out
    domain: str

    @classmethod
    def from_dataset(cls, dataset: InteractionDataset, domain: str) -> ItemFacts:
        rows = dataset.items.to_dict("records")
        raw_tags = []
        for row in rows:
            field = str(row.get("genres") or "").strip() or str(row.get("categories") or "").strip()
            tags = [t.strip() for t in field.split(",")]
            raw_tags.append(list(dict.fromkeys(t for t in tags if t.lower() not in PLACEHOLDER_TAGS)))
        counts = Counter(t for tags in raw_tags for t in tags)
        share = {t: c / max(1, len(rows)) for t, c in counts.items()}
        if domain == "products":
            informative = [[t for t in tags if share[t] <= COMMON_TAG_SHARE] for tags in raw_tags]
        else:
            informative = raw_tags
        return cls(
            titles=[display_title(row) for row in rows],
            has_title=np.array([bool(str(row.get("title") or "").strip()) for row in rows], dtype=bool),
            tag_field=[", ".join(tags) for tags in raw_tags],
            tags=informative,
            tag_share=share,
            brands=[str(row.get("brand") or "").strip() for row in rows],
            descriptions=[str(row.get("description") or "").strip() for row in rows],
            held_out=dataset.items["text_held_out"].to_numpy(dtype=bool),
            domain=domain,
        )

    @property
    def tag_limit(self) -> int:
        """Tags a sentence names: up to three genres, but one category (the most specific reads best)."""
        return 3 if self.domain == "movies" else 1

    def pick_tags(self, tags: Sequence[str], limit: int | None = None) -> list[str]:
        """Up to `limit` of `tags`, rarest first and, among equally rare ones, the later (deeper in an
        Amazon category path), kept in their given order."""
        limit = self.tag_limit if limit is None else limit
        if len(tags) <= limit:
            return list(tags)
        ranked = sorted(range(len(tags)), key=lambda k: (self.tag_share.get(tags[k], 0.0), -k))
        return [tags[k] for k in sorted(ranked[:limit])]

    def pitch(self, item: int) -> str:
        return pitch_text(self.titles[item], self.pick_tags(self.tags[item]), self.brands[item], self.domain)


# --- Histories ---------------------------------------------------------------------------------


@dataclass
class _Histories:
    """Per user, items and ratings in time order (one flat array plus bounds)."""

    items: np.ndarray
    ratings: np.ndarray
    bounds: np.ndarray

    @classmethod
    def from_frame(cls, frame, num_users: int) -> _Histories:
        order = np.argsort(frame["user"].to_numpy(), kind="stable")
        users = frame["user"].to_numpy()[order]
        ratings = frame["rating"].to_numpy(dtype=np.float32) if "rating" in frame else np.full(len(frame), np.nan)
        return cls(
            items=frame["item"].to_numpy()[order].astype(np.int64),
            ratings=np.asarray(ratings, dtype=np.float32)[order],
            bounds=np.searchsorted(users, np.arange(num_users + 1)),
        )

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.bounds[user], self.bounds[user + 1]
        return self.items[lo:hi], self.ratings[lo:hi]


def _with_ratings(frame, dataset: InteractionDataset):
    """(user, item) rows with their rating looked up in the dataset (validation/test frames lack it)."""
    if "rating" in frame:
        return frame
    ratings = dataset.interactions[["user", "item", "rating"]]
    return frame[["user", "item"]].merge(ratings, on=["user", "item"], how="left", sort=False)


def _rng(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


# --- The builder -------------------------------------------------------------------------------


@dataclass
class _Draft:
    fields: dict
    target: str
    item: int | None = None
    user: int | None = None
    target_item: int | None = None
    text_held_out_subject: bool = False


class _Builder:
    def __init__(self, dataset, split, stage, *, seed, history_length, domain, positions_per_user, strict):
        self.dataset, self.split, self.stage, self.seed = dataset, split, stage, seed
        self.history_length = history_length
        self.positions_per_user = positions_per_user
        self.strict = strict and stage == "train"
        self.facts = ItemFacts.from_dataset(dataset, domain)
        self.train = _Histories.from_frame(split.train, split.num_users)
        ratings = dataset.interactions["rating"].to_numpy(dtype=np.float32)
        self.high = HIGH_RATING * float(np.nanmax(ratings)) if np.isfinite(ratings).any() else None
        if stage == "test":
            between = split.valid if split.valid_period is None else split.valid_period
            self.extra = _Histories.from_frame(_with_ratings(between, dataset), split.num_users)

    def liked(self, ratings: np.ndarray) -> np.ndarray:
        if self.high is None:
            return np.zeros(len(ratings), dtype=bool)
        return np.nan_to_num(ratings, nan=-np.inf) >= self.high

    # Item -> text

    def item_subjects(self) -> np.ndarray:
        every = np.arange(self.dataset.num_items)
        return every[~self.facts.held_out] if self.stage == "train" else every

    def item_drafts(self, task: str) -> list[_Draft]:
        facts, drafts = self.facts, []
        for i in self.item_subjects():
            if task == "item_title":
                target = facts.titles[i] if facts.has_title[i] else ""
            elif task == "item_genres":
                target = facts.tag_field[i]
            elif task == "item_description":
                target = short_description(facts.descriptions[i]) if facts.descriptions[i] else ""
            else:
                target = facts.pitch(i) if facts.has_title[i] else ""
            if target:
                drafts.append(_Draft({"item": item_placeholder(i)}, target, item=int(i),
                                     text_held_out_subject=bool(facts.held_out[i])))
        return drafts

    # User -> text

    def profile_drafts(self) -> list[_Draft]:
        drafts = []
        for u in range(self.split.num_users):
            items, ratings = self.train.of(u)
            if len(items):
                drafts.append(_Draft({"user": user_placeholder(u)}, self.profile(items, ratings), user=u))
        return drafts

    def profile(self, items: np.ndarray, ratings: np.ndarray) -> str:
        facts = self.facts
        counts = Counter(t for i in items for t in facts.tags[i])
        top = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower()))[:3]]
        newest_first = np.arange(len(items))[::-1]
        if self.strict:
            newest_first = newest_first[~facts.held_out[items[newest_first]]]
        liked = self.liked(ratings)
        picks = [p for p in newest_first if liked[p]][:3]
        all_liked = len(picks) == min(3, len(newest_first)) and len(picks) > 0
        if not all_liked:
            fill = [p for p in newest_first if p not in picks][: 3 - len(picks)]
            picks = sorted(picks + fill, reverse=True)  # newest first
        verb = "enjoyed" if all_liked else ("watched" if facts.domain == "movies" else "bought")
        return profile_text(top, [facts.titles[items[p]] for p in picks], verb)

    # Recommendation

    def rec_cases(self, task: str) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
        """(user, history items, history ratings, target item) cases for a recommendation task."""
        cases = []
        if self.stage == "train":
            rng = _rng(self.seed, self.stage, task, "positions")
            for u in range(self.split.num_users):
                items, ratings = self.train.of(u)
                positions = np.arange(1, len(items))
                if self.strict:
                    positions = positions[~self.facts.held_out[items[positions]]]
                if len(positions) == 0:
                    continue
                chosen = [positions[-1]]
                if self.positions_per_user > 1 and len(positions) > 1:
                    size = min(self.positions_per_user - 1, len(positions) - 1)
                    others = rng.choice(len(positions) - 1, size=size, replace=False)
                    chosen += [positions[k] for k in np.sort(others)]
                for p in chosen:
                    cases.append((u, items[:p], ratings[:p], int(items[p])))
            return cases
        targets = self.split.targets(self.stage)
        for u, target in zip(targets["user"].to_numpy(), targets["item"].to_numpy()):
            items, ratings = self.train.of(int(u))
            if self.stage == "test":
                more_items, more_ratings = self.extra.of(int(u))
                items, ratings = np.concatenate([items, more_items]), np.concatenate([ratings, more_ratings])
            if len(items):
                cases.append((int(u), items, ratings, int(target)))
        return cases

    def rec_drafts(self, task: str) -> list[_Draft]:
        facts, drafts = self.facts, []
        rng = _rng(self.seed, self.stage, task, "liked")
        for u, items, ratings, target in self.rec_cases(task):
            title = facts.titles[target]
            if task == "sequential":
                history = ", ".join(item_placeholder(i) for i in items[-self.history_length :])
                drafts.append(_Draft({"history": history}, title, user=u, target_item=target))
            elif task == "straightforward":
                drafts.append(_Draft({"user": user_placeholder(u)}, title, user=u, target_item=target))
            else:
                liked_items = self.pick_liked(rng, items, ratings)
                if not liked_items:
                    continue
                liked_tags = {t for i in liked_items for t in facts.tags[i]}
                limit = min(2, facts.tag_limit)
                shared = facts.pick_tags([t for t in facts.tags[target] if t in liked_tags], limit)
                reason = reason_text(title, shared, facts.pick_tags(facts.tags[target], limit), facts.domain)
                liked = natural_join([item_placeholder(i) for i in liked_items])
                drafts.append(_Draft({"liked": liked}, reason, user=u, target_item=target))
        return drafts

    def pick_liked(self, rng: np.random.Generator, items: np.ndarray, ratings: np.ndarray) -> list[int]:
        """1-3 items from the last `LIKED_WINDOW` of the history, highly rated ones when there are any."""
        window = np.arange(max(0, len(items) - LIKED_WINDOW), len(items))
        if self.strict:
            window = window[~self.facts.held_out[items[window]]]
        liked = window[self.liked(ratings[window])]
        candidates = liked if len(liked) else window
        if len(candidates) == 0:
            return []
        count = min(int(rng.integers(1, 4)), len(candidates))
        chosen = np.sort(rng.choice(len(candidates), size=count, replace=False))
        return [int(items[candidates[k]]) for k in chosen]

    def drafts(self, task: str) -> list[_Draft]:
        if task in ITEM_TASKS:
            return self.item_drafts(task)
        if task == "user_profile":
            return self.profile_drafts()
        return self.rec_drafts(task)


def build_samples(
    dataset: InteractionDataset,
    split: Split,
    stage: str,
    *,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    max_per_task: int | None = None,
    history_length: int = 20,
    prompts: str = "seen",
    domain: str | None = None,
    positions_per_user: int = 3,
    strict_text_holdout: bool = False,
) -> list[Sample]:
    """Samples of `tasks` (default all) for one stage, grouped by task in `TASKS` order.

    prompts: "seen" (training phrasings), "unseen" (the held-out phrasing) or "all"; training
        accepts only "seen".
    max_per_task: a seeded subset of at most this many samples per task (kept in subject order).
    history_length: the most recent items a sequential prompt shows.
    domain: "movies" or "products" for the flavoured phrasings and target wording; inferred from
        the dataset when None.
    positions_per_user: training recommendation samples per user and task (the last training
        position, plus random earlier ones).
    strict_text_holdout: in training, also keep held-out items out of recommendation targets,
        profile titles and conversational mentions, so their titles appear in no training target.
    """
    if stage not in STAGES:
        raise InputError(f"stage must be one of {', '.join(STAGES)}, got '{stage}'")
    if prompts not in PROMPT_SETS:
        raise InputError(f"prompts must be one of {', '.join(PROMPT_SETS)}, got '{prompts}'")
    if stage == "train" and prompts != "seen":
        raise InputError("training samples use only the seen phrasings (prompts='seen')")
    unknown = [t for t in (tasks or ()) if t not in TASKS]
    if unknown:
        raise InputError(f"unknown task(s) {', '.join(unknown)}; tasks are {', '.join(TASKS)}")
    if history_length < 1 or positions_per_user < 1:
        raise InputError("history_length and positions_per_user must be at least 1")
    if max_per_task is not None and max_per_task < 0:
        raise InputError(f"max_per_task must be non-negative, got {max_per_task}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    domain = domain or infer_domain(dataset)
    builder = _Builder(dataset, split, stage, seed=int(seed), history_length=history_length, domain=domain,
                       positions_per_user=positions_per_user, strict=strict_text_holdout)
    samples: list[Sample] = []
    for task in (t for t in TASKS if tasks is None or t in tasks):
        drafts = builder.drafts(task)
        if max_per_task is not None and len(drafts) > max_per_task:
            keep = _rng(seed, stage, task, "subset").choice(len(drafts), size=max_per_task, replace=False)
            drafts = [drafts[k] for k in np.sort(keep)]
        templates = templates_for(task, domain, prompts)
        choice = _rng(seed, stage, task, "templates").integers(len(templates), size=len(drafts))
        for draft, k in zip(drafts, choice):
            template = templates[k]
            samples.append(Sample(
                task=task, template=template.name, prompt=template.fill(**draft.fields), target=draft.target,
                item=draft.item, user=draft.user, target_item=draft.target_item,
                held_out_prompt=template.held_out, text_held_out_subject=draft.text_held_out_subject,
            ))
    return samples


def group_by_task(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.task, []).append(sample)
    return grouped


def mix_samples(
    samples_by_task: Mapping[str, Sequence[Sample]], weights: Mapping[str, float], total: int, seed: int = 0
) -> list[Sample]:
    """A shuffled multi-task mixture of `total` samples, each task's share proportional to its weight.

    Tasks with no samples (e.g. item_description on a dataset without descriptions) get no share
    and the others are rescaled. A task asked for more samples than it has repeats its whole set
    (in fresh orders) before repeating any sample a further time.
    """
    unknown = [t for t in weights if t not in TRAINING_TASKS]
    if unknown:
        raise InputError(f"unknown task(s) in weights: {', '.join(unknown)}; tasks are {', '.join(TRAINING_TASKS)}")
    if any(w < 0 for w in weights.values()):
        raise InputError("task weights must be non-negative")
    if total < 0:
        raise InputError(f"total must be non-negative, got {total}")
    active = [t for t in TRAINING_TASKS if weights.get(t, 0) > 0 and len(samples_by_task.get(t, ())) > 0]
    if not active:
        raise InputError("no task has both a positive weight and samples")
    share = np.array([weights[t] for t in active], dtype=np.float64)
    quota = share / share.sum() * total
    counts = np.floor(quota).astype(int)
    leftover = np.argsort(-(quota - counts), kind="stable")[: total - counts.sum()]
    counts[leftover] += 1
    mixture: list[Sample] = []
    for task, count in zip(active, counts):
        pool = samples_by_task[task]
        rng = _rng(seed, "mix", task)
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-count // len(pool)))] or [[]])
        mixture.extend(pool[k] for k in order[:count].astype(int))
    shuffle = _rng(seed, "mix", "shuffle").permutation(len(mixture))
    return [mixture[k] for k in shuffle]
