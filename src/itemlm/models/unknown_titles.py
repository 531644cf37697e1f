"""What a model reads in place of a name it never learned: learned "unknown title" vectors.

The warm start fits a bridge's first vectors to each text-seen item's title, so for an item whose
text training never read, those title vectors interpolate other items' titles and the LLM goes on
to describe a film that does not exist. With `UnknownTitles`, such an item's title slots hold a few
learned vectors instead; its tag slots, which the bridge computes from the CF vector, stay. The
vectors are trained on text-seen items with every title hidden (`itemlm.train.unknown_titles`),
so the LLM learns to describe an item from what its CF vector says about it. Which items are
unknown is the catalogue's `text_held_out`: a model knows which items' text it read.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.io import read_safetensors

FILE = "unknown_titles.safetensors"


class UnknownTitles(nn.Module):
    """`title_slots` learned vectors that replace the first slots of unknown items' bridge output."""

    def __init__(self, title_slots: int, hidden: int, start: Tensor | None = None):
        super().__init__()
        if title_slots < 1:
            raise InputError(f"unknown titles need at least one title slot, got {title_slots}")
        start = torch.zeros(hidden) if start is None else start.detach().float().reshape(hidden)
        self.vectors = nn.Parameter(start.repeat(title_slots, 1))

    @property
    def title_slots(self) -> int:
        return self.vectors.shape[0]

    def forward(self, vectors: Tensor, unknown: Tensor) -> Tensor:
        """vectors: (keys, num_tokens, hidden) bridge output; unknown: (keys,) bool."""
        if vectors.shape[1] < self.title_slots:
            raise ValueError(f"the bridge gives {vectors.shape[1]} vectors per item, fewer than {self.title_slots} title slots")
        slots = torch.arange(vectors.shape[1], device=vectors.device) < self.title_slots
        replace = (unknown.to(vectors.device)[:, None] & slots[None, :])[..., None]
        learned = nn.functional.pad(self.vectors, (0, 0, 0, vectors.shape[1] - self.title_slots)).to(vectors.dtype)
        return torch.where(replace, learned[None], vectors)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({"vectors": self.vectors.detach().contiguous().cpu()}, str(Path(folder) / FILE))

    @classmethod
    def load(cls, folder: Path) -> UnknownTitles | None:
        """The vectors saved in a model folder, or None when it has none."""
        path = Path(folder) / FILE
        if not path.exists():
            return None
        tensors = read_safetensors(path, "unknown-title vectors file")
        vectors = tensors.get("vectors")
        if vectors is None or vectors.dim() != 2:
            raise InputError("expected one 2-D tensor 'vectors' (title slots x hidden size)", path=path)
        module = cls(vectors.shape[0], vectors.shape[1])
        module.vectors.data.copy_(vectors)
        return module
