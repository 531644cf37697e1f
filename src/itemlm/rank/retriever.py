"""The retriever of ranking mode: a sequential recommender that proposes candidates for the LLM.

The LLM can only re-order what it is shown, so the retriever's recall bounds ranking mode; the rest
of the catalogue follows the candidates in retriever order, which keeps HR/NDCG full-catalogue.

    retriever = load_or_train_retriever(split, "sasrec", dataset="ml-100k")
    ids, scores = retriever.candidates([[0, 49, 180]], n=20, exclude=[[0, 49, 180]])

Two kinds: `sasrec` (the default: causal self-attention over the history, trained with a full
softmax) and `mf` (the history's mean MF item vector dotted with every item vector). A retriever
saves as safetensors + retriever.json, inside a model folder or in the data-home cache, where it
is keyed by the split and a hash of the ordered training interactions it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from itemlm.cf.sasrec import SASRec, SASRecConfig, left_pad, train_sasrec
from itemlm.data.splits import Split
from itemlm.errors import InputError
from itemlm.io import atomic_folder, read_json_object, read_safetensors
from itemlm.paths import data_home

RETRIEVERS = ("sasrec", "mf")


class Retriever:
    """Scores every catalogue item for item histories (oldest first); proposes the top candidates."""

    def __init__(self, kind: str, num_items: int, *, sasrec: SASRec | None = None, item_vectors: np.ndarray | None = None, fingerprint: str = ""):
        if kind not in RETRIEVERS:
            raise InputError(f"unknown retriever '{kind}': expected one of {', '.join(RETRIEVERS)}")
        self.kind, self.num_items, self.fingerprint = kind, num_items, fingerprint
        self.sasrec = sasrec.eval() if sasrec is not None else None
        self.item_vectors = None if item_vectors is None else torch.as_tensor(item_vectors, dtype=torch.float32)

    @torch.no_grad()
    def scores(self, histories: list[list[int]]) -> Tensor:
        """[B, num_items] scores; an empty history scores every item 0 (ties keep catalogue order)."""
        if self.kind == "sasrec":
            batch = left_pad([np.asarray(h, dtype=np.int64) for h in histories], self.sasrec.config.max_length)
            scores = self.sasrec.logits(self.sasrec(batch)[:, -1])
        else:
            profile = torch.stack([
                self.item_vectors[list(h)].mean(0) if len(h) else self.item_vectors.new_zeros(self.item_vectors.shape[1])
                for h in histories
            ])
            scores = profile @ self.item_vectors.T
        empty = torch.tensor([len(h) == 0 for h in histories])
        return scores.masked_fill(empty[:, None], 0.0)

    def candidates(self, histories: list[list[int]], n: int, exclude: list[list[int]] | None = None) -> tuple[Tensor, Tensor]:
        """(items [B, n], their scores [B, n]) best first, `exclude` (default: the history) left out."""
        return top_candidates(self.scores(histories), n, exclude if exclude is not None else histories)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        with atomic_folder(folder) as staging:
            config = {"kind": self.kind, "num_items": self.num_items, "fingerprint": self.fingerprint}
            if self.kind == "sasrec":
                config["sasrec"] = asdict(self.sasrec.config)
                save_file({k: v.contiguous() for k, v in self.sasrec.state_dict().items()}, str(staging / "retriever.safetensors"))
            else:
                save_file({"item_vectors": self.item_vectors.contiguous()}, str(staging / "retriever.safetensors"))
            (staging / "retriever.json").write_text(json.dumps(config, indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Retriever":
        folder = Path(folder)
        config = read_json_object(folder / "retriever.json", "retriever config")
        tensors = read_safetensors(folder / "retriever.safetensors", "retriever weights file")
        try:
            if config["kind"] == "sasrec":
                model = SASRec(config["num_items"], SASRecConfig(**config["sasrec"]))
                model.load_state_dict(tensors)
                return cls("sasrec", config["num_items"], sasrec=model, fingerprint=config.get("fingerprint", ""))
            return cls(config["kind"], config["num_items"], item_vectors=tensors["item_vectors"].numpy(), fingerprint=config.get("fingerprint", ""))
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise InputError(f"unreadable retriever ({type(error).__name__}: {str(error).splitlines()[0][:160]})", path=folder) from None


def without(scores: Tensor, exclude: list[list[int]] | None) -> Tensor:
    """A float copy of `scores` with each row's `exclude` items at -inf."""
    scores = scores.float().clone()
    for row, items in enumerate(exclude or []):
        if len(items):
            scores[row, torch.as_tensor(list(items), dtype=torch.long)] = -torch.inf
    return scores


def top_candidates(scores: Tensor, n: int, exclude: list[list[int]] | None = None) -> tuple[Tensor, Tensor]:
    """The `n` best items per row after removing `exclude`; ties go to the lower item index."""
    scores = without(scores, exclude)
    n = min(n, scores.shape[1])
    # a stable descending sort: equal scores keep catalogue order, so candidates are deterministic
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :n]
    return order, scores.gather(1, order)


def sequence_fingerprint(split: Split) -> str:
    """sha256 of the ordered training interactions (order matters to a sequential model)."""
    digest = hashlib.sha256(f"{split.strategy}:{split.num_users}x{split.num_items}".encode())
    digest.update(split.train[["user", "item"]].to_numpy("<i8").tobytes())
    return digest.hexdigest()


def retriever_folder(split: Split, kind: str, *, dataset: str, home: str | Path | None = None, seed: int = 0) -> Path:
    return data_home(home) / "models" / dataset / f"{split.strategy}-{sequence_fingerprint(split)[:12]}" / f"retriever-{kind}-s{seed}"


def load_or_train_retriever(
    split: Split, kind: str = "sasrec", *, dataset: str, home: str | Path | None = None, item_vectors: np.ndarray | None = None,
    seed: int = 0, progress: bool = False, sasrec: SASRecConfig | None = None,
) -> Retriever:
    """A retriever fitted on `split`'s training interactions, trained once and cached.

    `mf` needs `item_vectors` (the run's CF vectors); it is cheap and never cached. `sasrec`: the
    SASRec settings (default `SASRecConfig(seed=seed)`); a cached model is served only for the same.
    """
    if kind == "mf":
        if item_vectors is None:
            raise InputError("the mf retriever needs the run's MF item vectors")
        return Retriever("mf", split.num_items, item_vectors=item_vectors, fingerprint=sequence_fingerprint(split))
    if kind not in RETRIEVERS:
        raise InputError(f"unknown retriever '{kind}': expected one of {', '.join(RETRIEVERS)}")
    folder = retriever_folder(split, kind, dataset=dataset, home=home, seed=seed)
    fingerprint = sequence_fingerprint(split)
    config = sasrec or SASRecConfig(seed=seed)
    if (folder / "retriever.json").exists():
        cached = Retriever.from_pretrained(folder)
        # the same training data and the same settings (a changed default retrains rather than serve the old model)
        if cached.fingerprint == fingerprint and cached.num_items == split.num_items and cached.sasrec.config == config:
            return cached
    # each finished epoch is kept beside the cache, so a stopped run (a killed bench cell) continues it
    scorer = train_sasrec(split, config, progress=progress, resume_folder=folder.with_name(folder.name + ".training"))
    retriever = Retriever("sasrec", split.num_items, sasrec=scorer.model, fingerprint=fingerprint)
    retriever.save_pretrained(folder)
    return retriever
