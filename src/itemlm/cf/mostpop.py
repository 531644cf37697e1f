"""MostPop: every user gets the catalogue sorted by training popularity. The floor any model must clear."""

from __future__ import annotations

import numpy as np
import torch

from itemlm.data.splits import Split


class MostPopular:
    def __init__(self, split: Split):
        counts = np.bincount(split.train["item"].to_numpy(), minlength=split.num_items)
        self.popularity = torch.as_tensor(counts, dtype=torch.float32)

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.popularity.expand(len(users), -1)
