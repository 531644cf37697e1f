"""Users' interaction histories, in time order, looked up by user index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from itemlm.data.dataset import InteractionDataset


@dataclass
class Histories:
    """Per user, items and ratings in time order (one flat array plus bounds)."""

    items: np.ndarray
    ratings: np.ndarray
    bounds: np.ndarray

    @classmethod
    def from_frame(cls, frame, num_users: int) -> Histories:
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


def with_ratings(frame, dataset: InteractionDataset):
    """(user, item) rows with their rating looked up in the dataset (validation/test frames lack it)."""
    if "rating" in frame:
        return frame
    ratings = dataset.interactions[["user", "item", "rating"]]
    return frame[["user", "item"]].merge(ratings, on=["user", "item"], how="left", sort=False)
