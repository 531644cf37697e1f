"""Train / validation / test splits for next-item recommendation.

`leave_one_out_split` is the protocol of SASRec, OpenP5 and most LLM-recommender papers: per user,
in time order, the last item is the test target, the second last the validation target, the rest is
training. `temporal_split` cuts the whole log at two global time points instead, so that no training
interaction happens after any evaluation one.

Evaluation targets never leak into training: the tests in tests/test_splits.py check it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from itemlm.data.dataset import POSITIONS_NOTE, InteractionDataset
from itemlm.errors import InputError


@dataclass
class Split:
    """Training interactions plus one (user, item) target per evaluated user for validation and test."""

    train: pd.DataFrame  # user, item, timestamp, rating; sorted by user then time
    valid: pd.DataFrame  # user, item
    test: pd.DataFrame  # user, item
    num_users: int
    num_items: int
    strategy: str
    valid_period: pd.DataFrame | None = None  # every interaction between the two cuts (temporal only)

    def targets(self, stage: str) -> pd.DataFrame:
        if stage not in ("valid", "test"):
            raise InputError(f"evaluation stage must be 'valid' or 'test', got '{stage}'")
        return self.valid if stage == "valid" else self.test

    def train_matrix(self) -> sp.csr_matrix:
        """Binary user x item matrix of the training interactions."""
        return _binary_matrix(self.train, self.num_users, self.num_items)

    def seen_matrix(self, stage: str) -> sp.csr_matrix:
        """Items a user had consumed before the stage's target: train, plus the validation target for test."""
        between = self.valid if self.valid_period is None else self.valid_period
        seen = self.train if stage == "valid" else pd.concat([self.train[["user", "item"]], between[["user", "item"]]])
        return _binary_matrix(seen, self.num_users, self.num_items)

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training items in time order (empty array for users without any)."""
        return self._sequences(self.train)

    def histories_before(self, stage: str) -> list[np.ndarray]:
        """Each user's items before the stage's target, in time order: training, and for test also
        everything between the cuts (leave-one-out: the validation target; temporal: the whole
        validation period), the items `seen_matrix(stage)` holds."""
        if stage not in ("valid", "test"):
            raise InputError(f"evaluation stage must be 'valid' or 'test', got '{stage}'")
        sequences = self.train_sequences()
        if stage == "valid":
            return sequences
        between = self._sequences(self.valid if self.valid_period is None else self.valid_period)
        return [np.concatenate([before, after]) if len(after) else before for before, after in zip(sequences, between)]

    def _sequences(self, frame: pd.DataFrame) -> list[np.ndarray]:
        """Per user, the items of `frame` (sorted by user, then time) in order."""
        users = frame["user"].to_numpy()
        items = frame["item"].to_numpy()
        bounds = np.searchsorted(users, np.arange(self.num_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.num_users)]

    def fingerprint(self, *, with_validation: bool = False) -> str:
        """sha256 of exactly what a model fitted on this split sees: the distinct training
        (user, item) pairs and the matrix shape, plus the validation targets when asked.

        Caches derived from a split (MF vectors, tuned grids) are keyed by it, so vectors fitted on
        one split or one version of a dataset are never served for another.
        """
        digest = hashlib.sha256(f"{self.num_users}x{self.num_items}".encode())
        pairs = self.train["user"].to_numpy(np.int64) * self.num_items + self.train["item"].to_numpy(np.int64)
        digest.update(np.unique(pairs).astype("<i8").tobytes())
        if with_validation:
            digest.update(b"valid")
            digest.update(self.valid[["user", "item"]].to_numpy("<i8").tobytes())
        return digest.hexdigest()

    def summary(self) -> dict:
        return {
            "strategy": self.strategy,
            "train_interactions": int(len(self.train)),
            "valid_targets": int(len(self.valid)),
            "test_targets": int(len(self.test)),
        }


def _binary_matrix(frame: pd.DataFrame, num_users: int, num_items: int) -> sp.csr_matrix:
    data = np.ones(len(frame), dtype=np.float32)
    matrix = sp.csr_matrix(
        (data, (frame["user"].to_numpy(), frame["item"].to_numpy())), shape=(num_users, num_items)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def leave_one_out_split(dataset: InteractionDataset, min_train: int = 1) -> Split:
    """Last item -> test, second last -> validation, the rest -> train (users with fewer than
    `min_train + 2` interactions stay wholly in training and are not evaluated)."""
    inter = dataset.interactions  # already sorted by user, then time
    users = inter["user"].to_numpy()
    position_from_end = inter.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
    length = np.bincount(users, minlength=dataset.num_users)[users]
    evaluated = length >= min_train + 2
    test_rows = evaluated & (position_from_end == 0)
    valid_rows = evaluated & (position_from_end == 1)
    train = inter[~(test_rows | valid_rows)].reset_index(drop=True)
    return Split(
        train=train,
        valid=inter.loc[valid_rows, ["user", "item"]].reset_index(drop=True),
        test=inter.loc[test_rows, ["user", "item"]].reset_index(drop=True),
        num_users=dataset.num_users,
        num_items=dataset.num_items,
        strategy="leave-one-out",
    )


def temporal_split(dataset: InteractionDataset, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Global time cut: the last `test_fraction` of interactions (by time) form the test period,
    the `valid_fraction` before it the validation period. Each user's first interaction in a period
    is that user's target there; training keeps only interactions before the validation cut."""
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise InputError("temporal split fractions must be in (0, 1) and sum to less than 1")
    inter = dataset.interactions
    if dataset.manifest.get("notes", {}).get("timestamp") == POSITIONS_NOTE:
        raise InputError(f"'{dataset.name}' has no times, only each item's position in its user's sequence, so a global time "
                         "cut means nothing; use the leave-one-out split")
    times = np.sort(inter["timestamp"].to_numpy())
    valid_cut = times[int(len(times) * (1 - valid_fraction - test_fraction))]
    test_cut = times[int(len(times) * (1 - test_fraction))]
    timestamp = inter["timestamp"]
    train = inter[timestamp < valid_cut].reset_index(drop=True)
    valid_period = inter[(timestamp >= valid_cut) & (timestamp < test_cut)]

    def first_per_user(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.drop_duplicates("user", keep="first")[["user", "item"]].reset_index(drop=True)

    return Split(
        train=train,
        valid=first_per_user(valid_period),
        test=first_per_user(inter[timestamp >= test_cut]),
        num_users=dataset.num_users,
        num_items=dataset.num_items,
        strategy="temporal",
        valid_period=valid_period[["user", "item"]].reset_index(drop=True),
    )


def make_split(dataset: InteractionDataset, strategy: str = "leave-one-out") -> Split:
    if strategy in ("leave-one-out", "loo"):
        return leave_one_out_split(dataset)
    if strategy == "temporal":
        return temporal_split(dataset)
    raise InputError(f"unknown split '{strategy}': expected 'leave-one-out' or 'temporal'")
