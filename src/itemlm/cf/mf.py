"""Matrix factorization on training interactions -> user and item embeddings in one shared space.

The ILM method treats a user as a special item, so user and item vectors must live in the same
space: score(user, item) = user_vector . item_vector. Both `implicit` algorithms give that:
ALS (weighted implicit-feedback least squares) and BPR (pairwise ranking; its item vectors carry a
bias in the last coordinate and its user vectors a matching constant 1).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from threadpoolctl import threadpool_limits

from itemlm.data.splits import Split
from itemlm.errors import InputError
from itemlm.io import atomic_folder, read_json, read_safetensors
from itemlm.paths import data_home


@dataclass
class MFConfig:
    algorithm: str = "als"  # "als" or "bpr"
    factors: int = 64
    iterations: int = 30
    regularization: float = 0.05
    alpha: float = 2.0  # ALS confidence weight of an observed interaction
    learning_rate: float = 0.05  # BPR only
    num_threads: int = 0  # ALS: 0 = all cores (deterministic with any count); BPR always fits on 1 (only then reproducible)
    seed: int = 0
    # True: `load_or_train_mf` replaces factors, iterations, regularization, alpha and learning rate
    # by those `itemlm cf tune` chose on validation for this algorithm, split and training data
    # (running the grid once when none is cached). The fields above are then ignored.
    tuned: bool = False

    def __post_init__(self):
        if self.algorithm not in ("als", "bpr"):
            raise InputError(f"unknown MF algorithm '{self.algorithm}': expected 'als' or 'bpr'")
        if self.factors < 1:
            raise InputError(f"factors must be positive, got {self.factors}")
        if self.iterations < 1:
            raise InputError(f"iterations must be positive, got {self.iterations}")
        if self.regularization < 0 or self.alpha <= 0 or self.learning_rate <= 0:
            raise InputError("regularization must be >= 0, alpha and learning_rate > 0")
        # 10 and 10.0 are one setting: keep the cache key from telling them apart
        self.regularization, self.alpha = float(self.regularization), float(self.alpha)
        self.learning_rate = float(self.learning_rate)

    def cache_key(self) -> dict:
        """The settings that decide the vectors: not the thread count, nor how they were chosen."""
        key = asdict(self)
        del key["num_threads"], key["tuned"]
        return key


@dataclass
class CFEmbeddings:
    """User and item vectors from a CF model, row-aligned with the dataset's user and item indices."""

    user_vectors: np.ndarray  # [num_users, dim] float32
    item_vectors: np.ndarray  # [num_items, dim] float32
    config: MFConfig
    dataset: str = ""
    split: str = ""  # the split strategy whose training interactions they were fitted on
    train_fingerprint: str = ""  # Split.fingerprint() of those interactions ("" = unknown)

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
            meta = {
                "config": asdict(self.config), "dataset": self.dataset, "dim": self.dim,
                "split": self.split, "train_fingerprint": self.train_fingerprint,
            }
            (staging / "config.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "CFEmbeddings":
        folder = Path(folder)
        if not (folder / "embeddings.safetensors").exists():
            raise InputError("no embeddings.safetensors here; train one with `itemlm cf train`", path=folder)
        tensors = read_safetensors(folder / "embeddings.safetensors", "CF embeddings file", framework="np")
        meta = read_json(folder / "config.json", "CF embeddings config")
        try:
            return cls(
                tensors["user_vectors"], tensors["item_vectors"], MFConfig(**meta["config"]), meta.get("dataset", ""),
                meta.get("split", ""), meta.get("train_fingerprint", ""),
            )
        except (KeyError, TypeError) as error:
            raise InputError(f"CF embeddings without the expected contents (missing or unexpected {error})", path=folder) from None


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
        split=split.strategy,
        train_fingerprint=split.fingerprint(),
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
            num_threads=1,  # reproducible only on one thread, and the vectors are cached whatever the thread count
            random_state=config.seed,
        )


def split_folder(split: Split, dataset: str, home: str | Path | None = None) -> Path:
    """<data home>/models/<dataset>/<split>-<training fingerprint>: the caches derived from one
    training set (MF vectors, tuned grids), apart from those of any other split or data version."""
    return data_home(home) / "models" / dataset / f"{split.strategy}-{split.fingerprint()[:12]}"


def mf_folder(split: Split, config: MFConfig, *, dataset: str, home: str | Path | None = None) -> Path:
    """Where `load_or_train_mf` keeps, and `itemlm cf train` writes, the vectors of one config."""
    key = hashlib.sha256(json.dumps(config.cache_key(), sort_keys=True).encode()).hexdigest()[:8]
    return split_folder(split, dataset, home) / f"mf-{config.algorithm}-{config.factors}-s{config.seed}-{key}"


def trained_mf_folders(split: Split, *, dataset: str, home: str | Path | None = None) -> list[Path]:
    """The MF folders fitted on this split's training data, newest first."""
    folders = split_folder(split, dataset, home).glob("mf-*/embeddings.safetensors")
    return [f.parent for f in sorted(folders, key=lambda f: f.stat().st_mtime, reverse=True)]
