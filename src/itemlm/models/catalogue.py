"""What a model knows about the world besides its weights: the items, the users' histories, the CF vectors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from itemlm.data.text_views import display_title
from itemlm.errors import InputError
from itemlm.io import read_json, read_parquet, read_safetensors
from itemlm.tasks.facts import row_tags
from itemlm.tasks.phrasing import title_year


@dataclass
class Catalogue:
    """What the model knows about the world besides its weights: items, users' histories, CF vectors."""

    items: pd.DataFrame  # the dataset's item table (title, year, genres, ..., text_held_out)
    histories: list[list[int]]  # each user's training items, oldest first
    item_vectors: np.ndarray  # [num_items, cf_dim]
    user_vectors: np.ndarray  # [num_users, cf_dim]
    domain: str = "movies"

    def __post_init__(self):
        self.titles = [display_title(row) for row in self.items.to_dict("records")]
        # per item: training never read its text (older catalogues without the column: none)
        held = self.items["text_held_out"] if "text_held_out" in self.items else np.zeros(len(self.items), dtype=bool)
        self.text_held_out = np.asarray(held, dtype=bool)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @cached_property
    def tag_names(self) -> dict[str, str]:
        """Every genre (else category) the items carry, keyed by its lowercase spelling."""
        return {tag.lower(): tag for row in self.items.to_dict("records") for tag in row_tags(row)}

    def neighbour_years(self, items: list[int], k: int = 10) -> list[int | None]:
        """Per item, the median release year of its k nearest items by CF cosine among those whose text
        training read and whose title gives a year: when the films its audience watches came out. For
        an item whose text the model never read this is the best year its vectors give: on the standard
        preset's 100 such ML-100K test items the median of 10 is the item's year 0.38 of the time (off
        by 2.8 years on average), where the year in the LLM's answer to the title question is right
        0.03 of the time, the year of the title it names 0.16, as often as the catalogue's most common
        year (docs/benchmarks.md, "A year for items the model never read about"). None where no such
        item has a year (products)."""
        pool, years, unit = self._dated_readable_items
        if not len(pool) or not len(items):
            return [None] * len(items)
        asked = np.asarray(items)
        similarity = self._unit_item_vectors[asked] @ unit.T
        similarity[asked[:, None] == pool[None, :]] = -np.inf  # an item is not its own neighbour
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return [int(np.median(years[row])) for row in nearest]

    @cached_property
    def _unit_item_vectors(self) -> np.ndarray:
        return self.item_vectors / np.maximum(np.linalg.norm(self.item_vectors, axis=1, keepdims=True), 1e-12)

    @cached_property
    def _dated_readable_items(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`neighbour_years`' candidates, computed once: items whose text training read and whose title
        gives a year, their years and their unit CF vectors."""
        years = np.array([title_year(title) or 0 for title in self.titles])
        pool = np.flatnonzero(~self.text_held_out & (years > 0))
        return pool, years[pool], self._unit_item_vectors[pool]

    def log_popularity(self) -> np.ndarray:
        """Per item: log of its share of the training interactions, add-one smoothed (never -inf)."""
        counts = np.bincount(np.fromiter((i for h in self.histories for i in h), dtype=np.int64), minlength=self.num_items)
        return np.log(counts + 1.0) - np.log(counts.sum() + self.num_items)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        self.items.to_parquet(folder / "items.parquet", index=False)
        save_file(
            {"item_vectors": np.ascontiguousarray(self.item_vectors), "user_vectors": np.ascontiguousarray(self.user_vectors)},
            str(folder / "cf.safetensors"),
        )
        (folder / "catalogue.json").write_text(json.dumps({"domain": self.domain, "histories": self.histories}))

    @classmethod
    def load(cls, folder: Path) -> "Catalogue":
        vectors = read_safetensors(folder / "cf.safetensors", "CF vectors file", framework="np")
        meta = read_json(folder / "catalogue.json", "catalogue.json")
        items = read_parquet(folder / "items.parquet", "item table")
        try:
            return cls(items, meta["histories"], vectors["item_vectors"], vectors["user_vectors"], meta["domain"])
        except (KeyError, TypeError) as error:
            raise InputError(f"the catalogue lacks {error}", path=folder) from None
