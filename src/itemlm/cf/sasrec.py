"""SASRec: causal self-attention over a user's item sequence, the standard sequential baseline.

Each position predicts the next item; training uses cross-entropy over the whole catalogue (the
"full softmax" variant, stronger and simpler than sampled negatives at these catalogue sizes).
Scores for ranking are the last position's output dotted with every item embedding (shared input
and output embeddings, as in the original). Item index 0 is reserved for padding, so item i is
embedded at row i + 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from itemlm.cf.epoch_checkpoint import EpochCheckpoint
from itemlm.data.splits import Split


@dataclass
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    max_length: int = 50
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0


class SASRec(nn.Module):
    def __init__(self, num_items: int, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.items = nn.Embedding(num_items + 1, config.hidden, padding_idx=0)
        self.positions = nn.Embedding(config.max_length, config.hidden)
        layer = nn.TransformerEncoderLayer(
            config.hidden, config.heads, 4 * config.hidden, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.items.weight, std=0.02)

    def forward(self, sequences: Tensor) -> Tensor:
        """[B, L] item ids (+1, 0 = padding, left-padded) -> [B, L, hidden]."""
        length = sequences.shape[1]
        real = (sequences > 0).unsqueeze(-1)
        x = (self.items(sequences) * self.config.hidden**0.5 + self.positions(torch.arange(length))) * real
        # Causal attention only: left padding is zeros, and a key-padding mask would leave the
        # padded rows with nothing to attend to (NaN) -- the original SASRec zeroes them instead.
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)
        x = self.encoder(self.dropout(x), mask=causal)
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.items.weight[1:].T


def left_pad(sequences: list[np.ndarray], length: int) -> Tensor:
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        seq = seq[-length:] + 1
        if len(seq):
            out[row, -len(seq) :] = seq
    return torch.from_numpy(out)


def train_sasrec(
    split: Split, config: SASRecConfig | None = None, progress: bool = False, resume_folder: Path | None = None,
) -> "SASRecScorer":
    """SASRec fitted on `split`'s training sequences.

    `resume_folder`: where the state after each epoch is kept; a training stopped part way continues
    from its last finished epoch and ends with the same weights as one that never stopped. The
    folder is removed when training ends.
    """
    config = config or SASRecConfig()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SASRec(split.num_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.98))
    sequences = [s for s in split.train_sequences() if len(s) >= 2]
    checkpoint = None
    epochs_done = 0
    if resume_folder is not None:
        checkpoint = EpochCheckpoint(resume_folder, _training_identity(split.num_items, sequences, config))
        epochs_done = checkpoint.restore(model, optimizer, rng)
    window = config.max_length + 1
    epochs = tqdm(range(epochs_done, config.epochs), desc="SASRec", initial=epochs_done, total=config.epochs, disable=not progress)
    for epoch in epochs:
        model.train()
        order = rng.permutation(len(sequences))  # every training sequence once an epoch
        for start in range(0, len(sequences), config.batch_size):
            chunk = [sequences[i] for i in order[start : start + config.batch_size]]
            batch = left_pad(chunk, window)  # inputs are all but the last, targets all but the first
            inputs, targets = batch[:, :-1], batch[:, 1:]
            hidden = model(inputs)
            keep = (targets > 0) & (inputs > 0)
            loss = F.cross_entropy(model.logits(hidden[keep]), targets[keep] - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if checkpoint is not None and epoch + 1 < config.epochs:
            checkpoint.save(epoch + 1, model, optimizer, rng)
    if checkpoint is not None:
        checkpoint.remove()
    model.eval()
    return SASRecScorer(model, split)


def _training_identity(num_items: int, sequences: list[np.ndarray], config: SASRecConfig) -> dict:
    """What a saved epoch must match to be continued: the settings and the exact training sequences."""
    digest = hashlib.sha256()
    for sequence in sequences:
        sequence = np.asarray(sequence, dtype="<i8")
        digest.update(len(sequence).to_bytes(8, "little") + sequence.tobytes())
    return {"config": asdict(config), "num_items": num_items, "sequences": digest.hexdigest()}


class SASRecScorer:
    """Scores for `evaluate_ranking`: the history before the stage's target (`Split.histories_before`)."""

    def __init__(self, model: SASRec, split: Split):
        self.model = model
        self.histories = {stage: split.histories_before(stage) for stage in ("valid", "test")}
        self.stage = "test"

    def for_stage(self, stage: str) -> "SASRecScorer":
        self.stage = stage
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray) -> Tensor:
        histories = [self.histories[self.stage][user] for user in users]
        batch = left_pad(histories, self.model.config.max_length)
        return self.model.logits(self.model(batch)[:, -1])
