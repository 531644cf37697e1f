"""Batches for stage-1 pre-training: item-text pairs, item-item pairs and user-item pairs.

Every batch is a pure function of (seed, step), so a run resumed at step t reads exactly the data
an uninterrupted run would have read: no sampler state to save.

- Item-text: items whose text is *not* held out, in a per-epoch permutation (distinct items within a
  batch), each with one of its text views drawn at random.
- Item-item (II): two items consecutive in one user's *training* sequence.
- User-item (UI): a user and one of their *training* items.
Validation and test targets never enter any pair (tests/test_stage1_data.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from itemlm.data.dataset import InteractionDataset
from itemlm.data.splits import Split
from itemlm.data.text_views import build_text_views
from itemlm.errors import InputError


def consecutive_item_pairs(split: Split) -> np.ndarray:
    """[N, 2] pairs (previous, next) of distinct consecutive items in training sequences."""
    users = split.train["user"].to_numpy()
    items = split.train["item"].to_numpy()
    same_user = users[1:] == users[:-1]
    pairs = np.stack([items[:-1][same_user], items[1:][same_user]], axis=1)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def user_item_pairs(split: Split) -> np.ndarray:
    """[N, 2] (user, item) training interactions."""
    return split.train[["user", "item"]].to_numpy()


@dataclass
class Stage1Batch:
    item_ids: torch.Tensor  # [B]
    item_cf: torch.Tensor  # [B, cf_dim]
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    ii: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None  # cf_a, cf_b, ids_a, ids_b
    ui: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None  # user cf, item cf, user ids, item ids

    def to(self, device: torch.device | str) -> "Stage1Batch":
        def move(pair):
            return None if pair is None else tuple(t.to(device) for t in pair)

        return Stage1Batch(
            self.item_ids.to(device), self.item_cf.to(device), self.input_ids.to(device),
            self.attention_mask.to(device), move(self.ii), move(self.ui),
        )


class Stage1Data:
    def __init__(
        self,
        dataset: InteractionDataset,
        split: Split,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        tokenizer,
        *,
        batch_size: int = 32,
        max_text_tokens: int = 48,
        seed: int = 0,
        with_item_pairs: bool = False,
        with_user_pairs: bool = False,
    ):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_text_tokens = max_text_tokens
        self.seed = seed
        self.user_cf = torch.as_tensor(user_vectors, dtype=torch.float32)
        self.item_cf = torch.as_tensor(item_vectors, dtype=torch.float32)
        self.views = build_text_views(dataset.items)
        held_out = dataset.items["text_held_out"].to_numpy()
        has_text = (dataset.items["title"].str.len() > 0).to_numpy()
        self.train_items = np.flatnonzero(~held_out & has_text)
        self.held_out_items = np.flatnonzero(held_out)
        if len(self.train_items) < batch_size:
            raise InputError(f"only {len(self.train_items)} items have trainable text; batch size is {batch_size}")
        self.ii_pairs = consecutive_item_pairs(split) if with_item_pairs else None
        self.ui_pairs = user_item_pairs(split) if with_user_pairs else None
        self.steps_per_epoch = len(self.train_items) // batch_size

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def batch(self, step: int) -> Stage1Batch:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.train_items)
        items = order[position * self.batch_size : (position + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, position, 1])
        texts = [self.views[i][rng.integers(len(self.views[i]))] for i in items]
        input_ids, attention_mask = self.tokenize(texts)
        item_ids = torch.as_tensor(items, dtype=torch.long)
        return Stage1Batch(
            item_ids=item_ids,
            item_cf=self.item_cf[item_ids],
            input_ids=input_ids,
            attention_mask=attention_mask,
            ii=self._pairs(self.ii_pairs, rng, self.item_cf, self.item_cf),
            ui=self._pairs(self.ui_pairs, rng, self.user_cf, self.item_cf),
        )

    def _pairs(self, pairs: np.ndarray | None, rng: np.random.Generator, left_cf, right_cf):
        if pairs is None:
            return None
        chosen = torch.as_tensor(pairs[rng.integers(len(pairs), size=self.batch_size)], dtype=torch.long)
        left, right = chosen[:, 0], chosen[:, 1]
        return left_cf[left], right_cf[right], left, right

    def canonical_texts(self, items: np.ndarray) -> list[str]:
        """View 0 of each item: what retrieval is evaluated against."""
        return [self.views[i][0] for i in items]
