"""What each stage-2 task's target is built from, and what it may not see.

- item_title / item_genres / item_description / item_pitch: the subject item's metadata. Training
  uses only items whose text is not held out; evaluation covers every item and marks the held-out
  ones (`Sample.text_held_out_subject`), so the two groups can be scored apart.
- user_profile: the user's *training* history (top tags, a few recent titles), at every stage.
- explanation: why a user's next item suits what they liked (tags shared with the liked items);
  like the item tasks, training never explains an item whose text is held out.
- sequential / straightforward / conversational: training targets are positions inside a user's
  training sequence with only the items before them as context; validation and test targets are
  the split's, with everything the user had consumed before them as context. Validation and test
  items never appear in a training sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from itemlm.data.dataset import InteractionDataset
from itemlm.data.splits import Split
from itemlm.tasks.facts import ItemFacts
from itemlm.tasks.histories import Histories, with_ratings
from itemlm.tasks.phrasing import natural_join, profile_text, reason_text, short_description, why_text
from itemlm.tasks.seeding import named_rng
from itemlm.tasks.templates import ITEM_TASKS, item_placeholder, user_placeholder

HIGH_RATING = 0.8
"""A rating at or above this fraction of the dataset's highest rating counts as "liked" (4 of 5)."""
LIKED_WINDOW = 10
"""Conversational requests mention items from the user's last this-many interactions."""


@dataclass
class Draft:
    """A sample before its phrasing is chosen: the template's fields, the target and who it is about."""

    fields: dict
    target: str
    item: int | None = None
    user: int | None = None
    target_item: int | None = None
    text_held_out_subject: bool = False
    consumed: tuple[int, ...] = ()


class TargetBuilder:
    """The drafts of every task for one stage of a split; `drafts(task)` is the entry point."""

    def __init__(
        self, dataset: InteractionDataset, split: Split, stage: str, *,
        seed: int, history_length: int, domain: str, positions_per_user: int, strict: bool,
    ):
        self.dataset, self.split, self.stage, self.seed = dataset, split, stage, seed
        self.history_length = history_length
        self.positions_per_user = positions_per_user
        self.strict = strict and stage == "train"
        self.facts = ItemFacts.from_dataset(dataset, domain)
        self.train = Histories.from_frame(split.train, split.num_users)
        ratings = dataset.interactions["rating"].to_numpy(dtype=np.float32)
        self.high = HIGH_RATING * float(np.nanmax(ratings)) if np.isfinite(ratings).any() else None
        if stage == "test":
            between = split.valid if split.valid_period is None else split.valid_period
            self.extra = Histories.from_frame(with_ratings(between, dataset), split.num_users)

    def drafts(self, task: str) -> list[Draft]:
        if task in ITEM_TASKS:
            return self.item_drafts(task)
        if task == "user_profile":
            return self.profile_drafts()
        if task == "explanation":
            return self.explanation_drafts()
        return self.rec_drafts(task)

    def liked(self, ratings: np.ndarray) -> np.ndarray:
        if self.high is None:
            return np.zeros(len(ratings), dtype=bool)
        return np.nan_to_num(ratings, nan=-np.inf) >= self.high

    # Item -> text

    def item_subjects(self) -> np.ndarray:
        every = np.arange(self.dataset.num_items)
        return every[~self.facts.held_out] if self.stage == "train" else every

    def item_drafts(self, task: str) -> list[Draft]:
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
                drafts.append(Draft({"item": item_placeholder(i)}, target, item=int(i),
                                    text_held_out_subject=bool(facts.held_out[i])))
        return drafts

    # User -> text

    def profile_drafts(self) -> list[Draft]:
        drafts = []
        for u in range(self.split.num_users):
            items, ratings = self.train.of(u)
            if len(items):
                drafts.append(Draft({"user": user_placeholder(u)}, self.profile(items, ratings), user=u))
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
            rng = named_rng(self.seed, self.stage, task, "positions")
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

    def rec_drafts(self, task: str) -> list[Draft]:
        facts, drafts = self.facts, []
        rng = named_rng(self.seed, self.stage, task, "liked")
        for u, items, ratings, target in self.rec_cases(task):
            title = facts.titles[target]
            consumed = () if self.stage == "train" else tuple(int(i) for i in items)  # what an evaluation leaves out
            if task == "sequential":
                history = ", ".join(item_placeholder(i) for i in items[-self.history_length :])
                drafts.append(Draft({"history": history}, title, user=u, target_item=target, consumed=consumed))
            elif task == "straightforward":
                drafts.append(Draft({"user": user_placeholder(u)}, title, user=u, target_item=target, consumed=consumed))
            else:
                liked_items = self.pick_liked(rng, items, ratings)
                if not liked_items:
                    continue
                reason = reason_text(title, *self.reason_tags(liked_items, target), facts.domain)
                liked = natural_join([item_placeholder(i) for i in liked_items])
                drafts.append(Draft({"liked": liked}, reason, user=u, target_item=target, consumed=consumed))
        return drafts

    def explanation_drafts(self) -> list[Draft]:
        """Each recommendation case's next item, explained to the user by the tags it shares with the
        1-3 items they liked (else its own tags); the item is in the prompt, as vectors."""
        facts, drafts = self.facts, []
        rng = named_rng(self.seed, self.stage, "explanation", "liked")
        for u, items, ratings, target in self.rec_cases("explanation"):
            if self.stage == "train" and facts.held_out[target]:
                continue
            liked_items = self.pick_liked(rng, items, ratings)
            why = why_text(*self.reason_tags(liked_items, target), facts.domain)
            if liked_items and why:
                liked = natural_join([item_placeholder(i) for i in liked_items])
                drafts.append(Draft({"liked": liked, "item": item_placeholder(target)}, why, item=target, user=u,
                                    text_held_out_subject=bool(facts.held_out[target])))
        return drafts

    def reason_tags(self, liked_items: list[int], target: int) -> tuple[list[str], list[str]]:
        """What a reason for `target` names: the tags it shares with the liked items, and its own (at most 2 each)."""
        facts = self.facts
        liked_tags = {t for i in liked_items for t in facts.tags[i]}
        limit = min(2, facts.tag_limit)
        shared = facts.pick_tags([t for t in facts.tags[target] if t in liked_tags], limit)
        return shared, facts.pick_tags(facts.tags[target], limit)

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
