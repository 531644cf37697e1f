"""Stage-1 losses for the item Q-Former: BLIP-2's three (ITC, ITM, ITG) with items in place of
images, plus ILM's item-item / user-item contrastive loss.

Each returns (scalar loss, dict of detached diagnostics). Diagnostics are 0-d tensors, except
`sim_i2t` / `sim_t2i` from `item_text_contrastive`: the [B, B] temperature-scaled similarities
that `item_text_matching` samples its hard negatives from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from itemlm.models.qformer import TEMPERATURE_RANGE, ItemQFormer


def false_negative_mask(a_ids: Tensor | None, b_ids: Tensor | None = None, *, same_space: bool = False) -> Tensor | None:
    """[B, B] bool, True at (i, j), i != j, where pair j is also a positive for row i because it
    shares an id with pair i (same item twice; for user-item pairs pass user and item ids).
    same_space: both sides are items (item-item pairs), so column j is row i's own item when
    a_i == b_j, a negative that is no negative (one mask entry covers both directions)."""
    if a_ids is None and b_ids is None:
        return None
    ids = [t for t in (a_ids, b_ids) if t is not None]
    same = torch.zeros(len(ids[0]), len(ids[0]), dtype=torch.bool, device=ids[0].device)
    for t in ids:
        same |= t[:, None] == t[None, :]
    if same_space and a_ids is not None and b_ids is not None:
        same |= a_ids[:, None] == b_ids[None, :]
    return same & ~torch.eye(len(same), dtype=torch.bool, device=same.device)


def item_text_similarity(item_emb: Tensor, text_emb: Tensor) -> Tensor:
    """[B_items, B_texts]: for each item and text, the best-matching query (BLIP-2)."""
    return torch.einsum("iqd,td->itq", item_emb, text_emb).amax(dim=-1)


def _symmetric_infonce(sim: Tensor, false_negatives: Tensor | None) -> tuple[Tensor, dict]:
    if false_negatives is not None:
        sim = sim.masked_fill(false_negatives, float("-inf"))
    targets = torch.arange(len(sim), device=sim.device)
    loss = (F.cross_entropy(sim, targets) + F.cross_entropy(sim.T, targets)) / 2
    with torch.no_grad():
        acc_ab = (sim.argmax(dim=1) == targets).float().mean()
        acc_ba = (sim.argmax(dim=0) == targets).float().mean()
    return loss, {"acc_ab": acc_ab, "acc_ba": acc_ba}


def item_text_contrastive(
    item_emb: Tensor, text_emb: Tensor, temperature: Tensor, item_ids: Tensor | None = None
) -> tuple[Tensor, dict]:
    """ITC: items [B, Q, D] and their texts [B, D] (both normalized) against in-batch negatives,
    both directions. `temperature` is `model.temperature()`; `item_ids` keeps a duplicated item
    from being a negative of itself."""
    sim = item_text_similarity(item_emb, text_emb) / temperature.clamp(*TEMPERATURE_RANGE)
    loss, acc = _symmetric_infonce(sim, false_negative_mask(item_ids))
    return loss, {
        "i2t_acc": acc["acc_ab"],
        "t2i_acc": acc["acc_ba"],
        "temperature": temperature.detach(),
        "sim_i2t": sim.detach(),
        "sim_t2i": sim.detach().T,
    }


def _sample_negatives(sim: Tensor, blocked: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """For each row, one column drawn with probability softmax(sim) over unblocked columns.
    Returns (rows that had a candidate, chosen columns)."""
    logits = sim.detach().float().masked_fill(blocked, float("-inf"))
    rows = (~blocked).any(dim=1).nonzero().squeeze(1)
    if len(rows) == 0:
        return rows, rows
    weights = logits[rows].softmax(dim=1).to(generator.device)
    picks = torch.multinomial(weights, 1, generator=generator).squeeze(1).to(sim.device)
    return rows, picks


def item_text_matching(
    model: ItemQFormer,
    cf: Tensor,
    kind: Tensor | None,
    input_ids: Tensor,
    attention_mask: Tensor,
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    *,
    generator: torch.Generator,
    item_ids: Tensor | None = None,
    share: tuple[int, int] = (0, 1),
) -> tuple[Tensor, dict]:
    """ITM: is this text about this item? B positives, plus for every text a hard negative item
    and for every item a hard negative text, drawn in proportion to softmax of the ITC
    similarities (the pair itself, and any pair with the same item id, excluded). Rows with no
    possible negative (all of the batch is one item) get none. `generator` lives on the device
    it samples on (CPU is fine) and makes the draw reproducible.

    `share=(rank, world)`: every process draws the same pairs from the whole batch and scores
    its contiguous part of them; the loss is that part's sum over all pairs, times `world` (the
    mean over all pairs once DDP averages the processes' gradients)."""
    B = cf.shape[0]
    if kind is None:
        kind = torch.zeros(B, dtype=torch.long, device=cf.device)
    kind = kind.to(cf.device)
    blocked = torch.eye(B, dtype=torch.bool, device=cf.device)
    same = false_negative_mask(item_ids)
    if same is not None:
        blocked |= same
    text_rows, neg_items = _sample_negatives(sim_t2i, blocked, generator)  # text r + other item
    item_rows, neg_texts = _sample_negatives(sim_i2t, blocked, generator)  # item r + other text
    item_index = torch.cat([torch.arange(B, device=cf.device), neg_items, item_rows])
    text_index = torch.cat([torch.arange(B, device=cf.device), text_rows, neg_texts])
    labels = torch.zeros(len(item_index), dtype=torch.long, device=cf.device)
    labels[:B] = 1
    pairs = len(labels)
    rank, world = share
    mine = torch.tensor_split(torch.arange(pairs, device=cf.device), world)[rank]
    item_index, text_index, labels = item_index[mine], text_index[mine], labels[mine]
    logits = model.itm_logits(cf[item_index], kind[item_index], input_ids[text_index], attention_mask[text_index])
    loss = F.cross_entropy(logits, labels, reduction="sum") * (world / pairs)
    with torch.no_grad():
        correct = logits.argmax(dim=1) == labels
    return loss, {"itm_acc": correct.float().mean(), "itm_negatives": torch.tensor(pairs - B)}


def item_grounded_generation(
    model: ItemQFormer,
    cf: Tensor,
    kind: Tensor | None,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    label_smoothing: float = 0.0,
    normalizer: Tensor | float | None = None,
) -> tuple[Tensor, dict]:
    """ITG: generate the item's text from its query outputs (causal mode). The first token
    ([CLS]) is replaced by the decoder-start token `model.config.dec_token_id`; each position
    predicts the next token; padding is ignored. Only real positions go through the LM head,
    which saves the [B, T, vocab] logits. The loss is the mean over these tokens, or their sum
    divided by `normalizer` when given (a distributed run's global token count / world size)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    decoder_ids = input_ids.clone()
    decoder_ids[:, 0] = model.config.dec_token_id
    text = model(cf, kind, decoder_ids, attention_mask, mode="causal").text
    targets = attention_mask[:, 1:].bool()
    logits = model.lm_logits(text[:, :-1][targets])
    labels = input_ids[:, 1:][targets]
    if normalizer is None:
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    else:
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum") / normalizer
    with torch.no_grad():
        acc = (logits.argmax(dim=1) == labels).float().mean()
    return loss, {"itg_token_acc": acc, "itg_tokens": torch.tensor(len(labels))}


def pair_contrastive(
    a_emb: Tensor, b_emb: Tensor, temperature: Tensor, false_negatives: Tensor | None = None
) -> tuple[Tensor, dict]:
    """InfoNCE between paired query outputs a [B, Q, D] and b [B, Q, D] (normalized): item-item
    (consecutive items of a user) or user-item (a user and one of their items). Similarity is the
    best query pair; in-batch negatives; symmetric. `false_negatives` [B, B] bool marks in-batch
    pairs that are not negatives (see `false_negative_mask`)."""
    sim = torch.einsum("iqd,jpd->ijqp", a_emb, b_emb).flatten(2).amax(dim=-1)
    sim = sim / temperature.clamp(*TEMPERATURE_RANGE)
    loss, acc = _symmetric_infonce(sim, false_negatives)
    return loss, {"a2b_acc": acc["acc_ab"], "b2a_acc": acc["acc_ba"]}
