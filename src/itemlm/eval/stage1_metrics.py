"""Stage-1 evaluation: does an item's CF vector find its own text among the whole catalogue's?

- Item-to-text and text-to-item retrieval recall@1/5/10 over all items (ITC similarity, max over
  queries), against each item's canonical text (view 0: title, year, genres).
- ITM accuracy on positive pairs and as many random negatives.
- ITG loss and perplexity of the canonical text given the item.
Each is reported for text-seen items and for text-held-out items (text never used in training):
the second column is the one that shows the Q-Former learned item-language, not memorized text.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from itemlm.data.stage1_data import Stage1Data
from itemlm.cf.evaluate import target_ranks
from itemlm.models import stage1_losses as losses
from itemlm.models.qformer import ItemQFormer

KS = (1, 5, 10)


def _ranks_of_diagonal(sim: torch.Tensor) -> np.ndarray:
    """Rank of sim[i, i] in row i (0 = best), ties broken by column index as in ranking.py."""
    return target_ranks(sim, torch.arange(len(sim)), None).numpy()


@torch.no_grad()
def retrieval_ranks(model: ItemQFormer, data: Stage1Data, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    items = np.arange(len(data.item_cf))
    item_emb, text_emb = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        item_emb.append(model.item_embeddings(data.item_cf[chunk]))
        text_emb.append(model.text_embeddings(*data.tokenize(data.canonical_texts(chunk))))
    sim = losses.item_text_similarity(torch.cat(item_emb).float(), torch.cat(text_emb).float())
    return _ranks_of_diagonal(sim), _ranks_of_diagonal(sim.T)


@torch.no_grad()
def itm_accuracy(model: ItemQFormer, data: Stage1Data, items: np.ndarray, seed: int = 0) -> float:
    if len(items) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    others = (items + rng.integers(1, len(data.item_cf), size=len(items))) % len(data.item_cf)
    correct = 0
    for start in range(0, len(items), 128):
        chunk, wrong = items[start : start + 128], others[start : start + 128]
        ids, mask = data.tokenize(data.canonical_texts(np.concatenate([chunk, wrong])))
        cf = data.item_cf[np.concatenate([chunk, chunk])]
        predicted = model.itm_logits(cf, None, ids, mask).argmax(1)
        labels = torch.cat([torch.ones(len(chunk)), torch.zeros(len(chunk))]).long()
        correct += int((predicted == labels).sum())
    return correct / (2 * len(items))


@torch.no_grad()
def itg_loss(model: ItemQFormer, data: Stage1Data, items: np.ndarray) -> float:
    total, count = 0.0, 0
    for start in range(0, len(items), 128):
        chunk = items[start : start + 128]
        ids, mask = data.tokenize(data.canonical_texts(chunk))
        loss, info = losses.item_grounded_generation(model, data.item_cf[chunk], None, ids, mask)
        tokens = int(info["itg_tokens"])
        total += float(loss) * tokens
        count += tokens
    return total / max(1, count)


def evaluate_stage1(model: ItemQFormer, data: Stage1Data, max_items_per_group: int = 512) -> dict:
    model.eval()
    i2t, t2i = retrieval_ranks(model, data)
    num_items = len(i2t)
    groups = {"text_seen": data.train_items, "text_held_out": data.held_out_items}
    rng = np.random.default_rng(0)
    report: dict = {"items": num_items, "chance_recall@10": 10 / num_items}
    for group, items in groups.items():
        sample = items if len(items) <= max_items_per_group else np.sort(rng.choice(items, max_items_per_group, replace=False))
        loss = itg_loss(model, data, sample) if len(sample) else float("nan")
        report[group] = {
            "items": int(len(items)),
            **{f"i2t_recall@{k}": float((i2t[items] < k).mean()) for k in KS},
            **{f"t2i_recall@{k}": float((t2i[items] < k).mean()) for k in KS},
            "itm_accuracy": itm_accuracy(model, data, sample),
            "itg_loss": loss,
            "itg_perplexity": math.exp(loss) if math.isfinite(loss) else float("nan"),
        }
    return report
