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
