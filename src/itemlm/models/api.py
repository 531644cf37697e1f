"""What users call on an `ItemLanguageModel`: describe items and users, recommend, explain, answer.

A part of `ItemLanguageModel` (it uses the model's `generate`, `encode_prompts`, `llm`, `catalogue`
and `ranker`), kept apart from the module's layout and training code.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from itemlm.errors import InputError
from itemlm.models.constrained import TitleTrie, constrained_beam_search
from itemlm.tasks.phrasing import capitalized, kind_phrase, natural_join, read_tags
from itemlm.tasks.templates import find_placeholders, item_placeholder, templates_for, user_placeholder


EXPLANATION_START = "Because it is"
"""How every answer of the explanation task starts ("Because it is also a crime film.")."""


class ItemLanguageAPI:
    """The user-facing half of `ItemLanguageModel`."""

    @torch.no_grad()
    def explain(self, liked: list[int], items: list[int], max_new_tokens: int = 24) -> list[str]:
        """Why each of `items` suits someone who liked `liked`, in the model's own words, as "Title —
        because ...", cut at the reason's first sentence. A model trained on the explanation task reads
        each item's vectors and answers "why should I watch <item>?"; an older one continues the
        conversational task's answer from the title alone."""
        if not items:
            return []
        liked_text = natural_join([item_placeholder(i) for i in liked[-3:]])
        titles = [self.catalogue.titles[item] for item in items]
        if "explanation" in self.trained_tasks:  # the answer starts as the task's answers do: its format is given, its words are not
            ask = self._domain_question("explanation")
            prompts = [ask.fill(liked=liked_text, item=item_placeholder(i)) for i in items]
            answers, lead = self.generate(prompts, max_new_tokens, [EXPLANATION_START] * len(items)), "because it is"
        else:
            noun = "watch" if self.catalogue.domain == "movies" else "buy"
            prompts = [f"I loved {liked_text}; what should I {noun} next?"] * len(items)
            answers, lead = self.generate(prompts, max_new_tokens, [f"{title} — because" for title in titles]), "because"
        sentences = [_first_sentence(answer) for answer in answers]
        return [f"{title} — {lead} {sentence}" if sentence else f"{title}." for title, sentence in zip(titles, sentences)]

    def _domain_question(self, task: str):
        """The task's training phrasing written for this catalogue's domain ("What genre of film is {item}?")."""
        return next(t for t in templates_for(task, self.catalogue.domain, "seen") if t.domain)

    @property
    def trie(self) -> TitleTrie:
        if self._trie is None:
            self._trie = TitleTrie.from_titles(self.llm.tokenizer, self.catalogue.titles)
        return self._trie

    def popularity_bonus(self, weight: float) -> list[float] | None:
        """Per trie node, `weight` x the largest log popularity of the titles below it (None at weight 0)."""
        check_prior_weight("popularity_prior", weight)
        if weight == 0:
            return None
        if self._best_popularity is None:
            self._best_popularity = self.trie.prefix_best(self.catalogue.log_popularity())
        return [weight * m for m in self._best_popularity]

    def prior_bonus(
        self, popularity: float, retriever: float, histories: list[list[int]] | None, exclude: list[list[int]] | None,
    ) -> list[float] | torch.Tensor | None:
        """The node bonus of trie generation: shared by every prompt when only popularity weighs in;
        with the retriever, one row per prompt, bounding each title below a node by its items' largest
        `popularity x log popularity + retriever x log softmax(retriever scores of the prompt's history)`,
        the items a prompt may not get left out of the bound."""
        check_prior_weight("retriever_prior", retriever)
        if retriever == 0:
            return self.popularity_bonus(popularity)
        check_prior_weight("popularity_prior", popularity)
        if self.ranker is None:
            raise InputError("retriever_prior needs a model with a retriever (train stage 2 with ranking.enabled=true)")
        if histories is None:
            raise ValueError("a retriever prior needs each prompt's item history")
        prior = retriever * torch.log_softmax(self.ranker.retriever.scores(histories).double(), dim=-1)
        if popularity:
            prior += popularity * torch.as_tensor(self.catalogue.log_popularity(), dtype=torch.float64)
        for row, banned in enumerate(exclude or []):
            prior[row, list(banned)] = -math.inf
        return self.trie.prefix_best_rows(prior)

    @torch.no_grad()
    def recommend_prompts(
        self, prompts: list[str], k: int = 10, exclude: list[list[int]] | None = None, num_beams: int | None = None,
        popularity_prior: float | None = None, retriever_prior: float | None = None, histories: list[list[int]] | None = None,
    ) -> list[list[tuple[int, float]]]:
        """Top-k distinct catalogue items per prompt (constrained beam search over titles).

        popularity_prior: weight w of the items' training popularity in the search, each title
        scoring log p(title) + w log popularity (None: the model's `popularity_prior`; 0: the LLM alone,
        the paper's protocol). retriever_prior: weight v of the model's retriever (ranking mode's), each
        title scoring + v log softmax(retriever scores) of the prompt's item history in `histories`
        (None: the model's `retriever_prior`; 0: no retriever)."""
        popularity = self.popularity_prior if popularity_prior is None else popularity_prior
        retriever = self.retriever_prior if retriever_prior is None else retriever_prior
        bonus = self.prior_bonus(popularity, retriever, histories, exclude)
        embeds, mask = self.encode_prompts(prompts)
        return constrained_beam_search(self.llm, embeds, mask, self.trie, num_beams or max(k, 10), k, exclude, bonus)

    @torch.no_grad()
    def name(self, items: list[int], num_beams: int = 10) -> list[tuple[int, str, float]]:
        """Which catalogue item each item's vectors say it is: the item_title question ("What is
        the title of <item>?") answered by beam search over the catalogue's titles, top 1, as
        (item, title, log-probability). A free answer can misread a token or have to finish a title
        longer than the bridge's title vectors; this one is always a real title, and on the
        bench's MLP cells it names 0.86-0.89 of text-seen items where greedy answers name 0.76-0.79
        (docs/benchmarks.md, "Naming within the catalogue"). An item whose text training never
        read gets the title its vectors are closest to, usually another item's. No prior joins the
        search: the name is the vectors' alone."""
        for item in items:
            if not 0 <= item < len(self.catalogue.titles):
                raise InputError(f"item {item} is not in the catalogue (0..{len(self.catalogue.titles) - 1})")
        questions = [f"What is the title of {item_placeholder(i)}?" for i in items]
        found = self.recommend_prompts(questions, 1, num_beams=num_beams, popularity_prior=0.0, retriever_prior=0.0) if items else []
        return [(best[0][0], self.catalogue.titles[best[0][0]], best[0][1]) for best in found]

    @torch.no_grad()
    def read_genres(self, items: list[int], max_new_tokens: int = 16) -> list[list[str]]:
        """Each item's genres (categories) as the model reads them from its vectors: its answer to the
        item_genres question, cut to tags the catalogue has (no repeats, at most three)."""
        ask = self._domain_question("item_genres")
        answers = self.generate([ask.fill(item=item_placeholder(i)) for i in items], max_new_tokens) if items else []
        return [read_tags(answer, self.catalogue.tag_names) for answer in answers]

    def kind_sentences(self, items: list[int]) -> list[str]:
        """"A 1994 drama and romance film." per item: the genres the model reads (`read_genres`) and,
        where the catalogue's titles carry years, the median year of the item's CF neighbours
        (`Catalogue.neighbour_years`): what the vectors say of an item whose text the model never read."""
        years = self.catalogue.neighbour_years(items)
        return [capitalized(kind_phrase(tags, self.catalogue.domain, year)) + "."
                for tags, year in zip(self.read_genres(items), years)]

    def describe(self, item: int, max_new_tokens: int = 48) -> str:
        """The model's answer to "What is <item> about?". For an item whose text training never read,
        what its vectors tell, the genres the model reads and a year (`kind_sentences`): asked freely,
        it describes whatever film the item's title vectors resemble ("The movie "Jogging Shame" (1992)
        is ..."), which scores lower against the item's real description than the kind sentence
        does, and is invented (docs/benchmarks.md, "Descriptions of items the model never read about")."""
        if not 0 <= item < self.catalogue.num_items:
            raise InputError(f"item {item} is not in the catalogue (0..{self.catalogue.num_items - 1})")
        if self.catalogue.text_held_out[item]:
            return self.kind_sentences([item])[0]
        return self.generate([f"What is {item_placeholder(item)} about?"], max_new_tokens)[0]

    def profile(self, user: int, max_new_tokens: int = 48) -> str:
        return self.generate([f"Describe the taste of {user_placeholder(user)}."], max_new_tokens)[0]

    def recommend(
        self,
        history: list[int] | None = None,
        user: int | None = None,
        text: str | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        exclude: list[int] | None = None,
        mode: str = "auto",
    ) -> list[tuple[int, str, float]]:
        """Recommend from an item history, a user, or free text (which may hold placeholders).

        mode: "rank" (the retriever's candidates ordered by the LLM, one forward pass), "generate"
        (beam search constrained to catalogue titles, the paper's protocol), or "auto": ranking
        mode when the model has a ranker and the request is a history or a user, else generation.
        `exclude`: items never to return, besides the consumed ones. Items are distinct.
        """
        if mode not in ("auto", "rank", "generate"):
            raise InputError(f"mode must be auto, rank or generate, got '{mode}'")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        for field, items in (("history", history), ("exclude", exclude)):
            outside = [i for i in items or () if not 0 <= i < self.catalogue.num_items]
            if outside:
                raise InputError(f"{field}: item {outside[0]} is not in the catalogue (0..{self.catalogue.num_items - 1})")
        if user is not None and not history and text is None:
            if not 0 <= user < len(self.catalogue.histories):
                raise InputError(f"user {user} is not in the catalogue (0..{len(self.catalogue.histories) - 1})")
        known = self._known_items(history, user, text)
        if self._ranks(mode, known, text):
            if self.ranker is None:
                raise InputError("this model has no ranker (train stage 2 with ranking.enabled=true), use mode='generate'")
            if text is not None:
                raise InputError("ranking mode reads an item history or a user, not free text")
            if not known:
                raise InputError("ranking mode needs a history: give at least one item, or a user with training items")
            banned = sorted(set(known if exclude_seen else []) | set(exclude or []))
            scores = self.ranker.rank(self, [known], [banned])[0]
            top = torch.sort(scores, descending=True, stable=True)
            chosen = [(int(i), float(v)) for i, v in zip(top.indices[:k], top.values[:k]) if torch.isfinite(v)]
            return [(item, self.catalogue.titles[item], score) for item, score in chosen]
        if text is not None:
            placeholders = find_placeholders(text)
            for kind, index, _, _ in placeholders:
                self.check_placeholder(kind, index)
            prompt, seen = text, [index for kind, index, _, _ in placeholders if kind == "item"]
        elif history:
            recent = history[-20:]
            prompt = f"A user interacted with these items in order: {', '.join(item_placeholder(i) for i in recent)}. What comes next?"
            seen = known
        elif user is not None:
            prompt, seen = f"Recommend an item for {user_placeholder(user)}.", known
        else:
            raise InputError("recommend needs a history, a user or a text")
        banned = sorted(set(seen if exclude_seen else []) | set(exclude or []))
        ranked = self.recommend_prompts([prompt], k, [banned], histories=[list(seen)])[0]
        return [(item, self.catalogue.titles[item], score) for item, score in ranked]

    def uses_ranking(self, mode: str = "auto", *, history: list[int] | None = None, user: int | None = None,
                     text: str | None = None) -> bool:
        """Whether `recommend` with these arguments orders the retriever's candidates (else it generates).
        auto: ranking mode needs something to rank from; a user without training items is generated for
        from their vector, and free text always is."""
        return self._ranks(mode, self._known_items(history, user, text), text)

    def _ranks(self, mode: str, known: list[int], text: str | None) -> bool:
        if mode != "auto":
            return mode == "rank"
        return self.ranker is not None and text is None and bool(known)

    def _known_items(self, history: list[int] | None, user: int | None, text: str | None) -> list[int]:
        if text is not None:
            return []
        return list(history) if history else (list(self.catalogue.histories[user]) if user is not None else [])

    def answer(self, message: str, max_new_tokens: int = 64) -> str:
        """The model's free-form answer to one message (placeholders allowed in it). A conversation
        of several turns, with preferences kept between them, is `itemlm.chat.session.ChatSession`."""
        return self.generate([message], max_new_tokens)[0]


def check_prior_weight(name: str, weight: float, path: Path | None = None) -> None:
    """A prior's weight is a finite number >= 0 (not NaN, not a bool); `path`: the file it came from."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or not math.isfinite(weight):
        raise InputError(f"{name} must be a number >= 0, got {weight!r}", path=path)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
