"""Matrix factorization on training interactions -> user and item embeddings in one shared space.

The ILM method treats a user as a special item, so user and item vectors must live in the same
space: score(user, item) = user_vector . item_vector. Both `implicit` algorithms give that:
ALS (weighted implicit-feedback least squares) and BPR (pairwise ranking; its item vectors carry a
bias in the last coordinate and its user vectors a matching constant 1).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from threadpoolctl import threadpool_limits

from itemlm.data.splits import Split
from itemlm.errors import InputError
from itemlm.io import atomic_folder
from itemlm.paths import data_home


@dataclass
class MFConfig:
    algorithm: str = "als"  # "als" or "bpr"
    factors: int = 64
    iterations: int = 30
    regularization: float = 0.05
    alpha: float = 2.0  # ALS confidence weight of an observed interaction
    learning_rate: float = 0.05  # BPR only
    num_threads: int = 0  # 0 = all cores (ALS is deterministic with any count; BPR only with 1)
    seed: int = 0

    def __post_init__(self):
        if self.algorithm not in ("als", "bpr"):
            raise InputError(f"unknown MF algorithm '{self.algorithm}': expected 'als' or 'bpr'")
        if self.factors < 1:
            raise InputError(f"factors must be positive, got {self.factors}")


@dataclass
class CFEmbeddings:
    """User and item vectors from a CF model, row-aligned with the dataset's user and item indices."""

    user_vectors: np.ndarray  # [num_users, dim] float32
    item_vectors: np.ndarray  # [num_items, dim] float32
    config: MFConfig
    dataset: str = ""

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.user_vectors[users]) @ torch.from_numpy(self.item_vectors).T

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        with atomic_folder(folder) as staging:
            save_file(
                {"user_vectors": np.ascontiguousarray(self.user_vectors), "item_vectors": np.ascontiguousarray(self.item_vectors)},
                str(staging / "embeddings.safetensors"),
            )
            meta = {"config": asdict(self.config), "dataset": self.dataset, "dim": self.dim}
            (staging / "config.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "CFEmbeddings":
        folder = Path(folder)
        if not (folder / "embeddings.safetensors").exists():
            raise InputError("no embeddings.safetensors here; train one with `itemlm cf train`", path=folder)
        tensors = load_file(str(folder / "embeddings.safetensors"))
        meta = json.loads((folder / "config.json").read_text())
        return cls(tensors["user_vectors"], tensors["item_vectors"], MFConfig(**meta["config"]), meta.get("dataset", ""))


def train_mf(split: Split, config: MFConfig | None = None, *, progress: bool = False, dataset: str = "") -> CFEmbeddings:
    """Fit MF on the split's training interactions only (validation and test targets are never seen)."""
    config = config or MFConfig()
    user_items = split.train_matrix().astype(np.float32)
    threads = config.num_threads
    # implicit's own solvers are threaded; a threaded BLAS underneath only oversubscribes the cores.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenBLAS is configured")
        model = _make_model(config, threads)
        model.fit(user_items.tocsr() * (config.alpha if config.algorithm == "als" else 1.0), show_progress=progress)
    return CFEmbeddings(
        user_vectors=np.asarray(model.user_factors, dtype=np.float32),
        item_vectors=np.asarray(model.item_factors, dtype=np.float32),
        config=config,
        dataset=dataset,
    )


def _make_model(config: MFConfig, threads: int):
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if config.algorithm == "als":
        return AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            iterations=config.iterations,
            num_threads=threads,
            random_state=config.seed,
        )
    else:
        return BayesianPersonalizedRanking(
            factors=config.factors,
            learning_rate=config.learning_rate,
            regularization=config.regularization,
            iterations=config.iterations,
            num_threads=threads or 1,
            random_state=config.seed,
        )


def load_or_train_mf(
    split: Split, config: MFConfig, *, dataset: str, home: str | Path | None = None, folder: str | Path | None = None
) -> tuple[CFEmbeddings, Path]:
    """MF embeddings for a dataset, trained once and cached under <data home>/models/<dataset>/.

    `folder` names embeddings to load as they are (a user's own CF model); otherwise a cached
    model is reused when it was trained with the same config on a dataset of the same size.
    """
    if folder is not None:
        return CFEmbeddings.from_pretrained(folder), Path(folder)
    cache = data_home(home) / "models" / dataset / f"mf-{config.algorithm}-{config.factors}-s{config.seed}"
    if (cache / "embeddings.safetensors").exists():
        cached = CFEmbeddings.from_pretrained(cache)
        if cached.config == config and cached.user_vectors.shape[0] == split.num_users:
            return cached, cache
    embeddings = train_mf(split, config, dataset=dataset)
    embeddings.save_pretrained(cache)
    return embeddings, cache
