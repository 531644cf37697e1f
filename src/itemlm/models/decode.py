"""Decoding with the frozen LLM: its own small loop over a KV cache.

`prefill` reads left-padded prompt embeddings, `decode_step` feeds one token per row; greedy
generation, sampling and the catalogue-constrained beam search (`itemlm.models.constrained`)
share this one path, which handles left padding (position ids follow the attention mask) and
needs no `generate()` round trip through token ids: prompts are embeddings with item vectors in
them. `Decoding` is a part of `FrozenLLM` (it uses the LLM's `_run`, `logits`, `embed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from itemlm.models.shared_prompt import SharedPromptCache, supports_shared_prompt


class Generation(NamedTuple):
    token_ids: list[list[int]]  # new tokens per row, without the stop token
    texts: list[str]  # the same, decoded without special tokens


@dataclass
class DecodeState:
    """What incremental decoding carries between steps: the KV cache and the attention mask."""

    cache: Any
    attention_mask: Tensor  # (rows, tokens so far), 1 = real token

    def select(self, rows: Tensor) -> None:
        """Keep (and repeat) the given rows, e.g. to expand prompts into beams or reorder beams."""
        self.cache.reorder_cache(rows)
        self.attention_mask = self.attention_mask.index_select(0, rows)


class Decoding:
    """The decoding half of `FrozenLLM`."""

    def prefill(self, inputs_embeds: Tensor, attention_mask: Tensor) -> tuple[Tensor, DecodeState]:
        """Read left-padded prompts; returns next-token logits (rows, vocab) and the decode state."""
        state = DecodeState(_new_cache(self.model), attention_mask.to(self.device).long())
        hidden = self._run(inputs_embeds, attention_mask, state)
        return self.logits(hidden[:, -1]), state

    def share_prompt(self, state: DecodeState) -> DecodeState:
        """After `prefill`, before the rows are expanded into beams: keep each prompt's keys and
        values once, not once per beam (`itemlm.models.shared_prompt`), where the model allows it."""
        if supports_shared_prompt(self.model) and not isinstance(state.cache, SharedPromptCache):
            state.cache = SharedPromptCache(state.cache, state.attention_mask)
        return state

    def decode_step(self, token_ids: Tensor, state: DecodeState) -> Tensor:
        """Feed one token per row; returns the next-token logits (rows, vocab)."""
        ones = torch.ones_like(state.attention_mask[:, :1])
        state.attention_mask = torch.cat([state.attention_mask, ones], dim=1)
        hidden = self._run(self.embed(token_ids.view(-1, 1)), state.attention_mask, state)
        return self.logits(hidden[:, -1])

    @torch.no_grad()
    def generate_embeds(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        max_new_tokens: int = 64,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        stop_token_ids: list[int] | None = None,
        no_repeat_ngram: int = 0,
    ) -> Generation:
        """Greedy (default) or sampled continuation of left-padded prompt embeddings.

        no_repeat_ngram: n > 0 forbids any token that would repeat an n-gram already generated in
            its row (greedy decoding of a small LLM otherwise loops: "recently, recently, ...").
        """
        stops = torch.tensor(stop_token_ids or self.stop_token_ids, device=self.device)
        logits, state = self.prefill(inputs_embeds, attention_mask)
        rows = logits.shape[0]
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        steps = []
        for step in range(max_new_tokens):
            if no_repeat_ngram > 0 and steps:
                logits = forbid_repeated_ngrams(logits, torch.stack(steps, 1), no_repeat_ngram)
            token = _pick(logits, do_sample, temperature, top_k, top_p, generator)
            token = token.masked_fill(done, stops[0])
            steps.append(token)
            done |= torch.isin(token, stops)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            logits = self.decode_step(token, state)
        stop_set, token_ids = set(stops.tolist()), []
        for row in (torch.stack(steps, 1).tolist() if steps else [[] for _ in range(rows)]):
            cut = next((i for i, t in enumerate(row) if t in stop_set), len(row))
            token_ids.append(row[:cut])
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
        return Generation(token_ids, texts)

    def generate(self, prompts: list[str], max_new_tokens: int = 64, **kwargs: Any) -> Generation:
        """Plain-text prompts (already chat-formatted when wanted) -> continuations."""
        embeds, mask = pad_embeds([self.embed_text(p) for p in prompts], side="left")
        return self.generate_embeds(embeds, mask, max_new_tokens, **kwargs)


def forbid_repeated_ngrams(logits: Tensor, generated: Tensor, n: int) -> Tensor:
    """`logits` (rows, vocab) with -inf on every token that would complete an n-gram that row's
    `generated` tokens (rows, steps) already hold."""
    if generated.shape[1] < n or n < 1:
        return logits
    logits = logits.clone()
    for row, tokens in enumerate(generated.tolist()):
        tail = tokens[len(tokens) - n + 1:] if n > 1 else []
        banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i:i + n - 1] == tail}
        if banned:
            logits[row, list(banned)] = float("-inf")
    return logits


def _new_cache(model: nn.Module) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)  # per-layer kinds (sliding window or not) from the config


def _pick(
    logits: Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / max(temperature, 1e-5)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def pad_embeds(sequences: list[Tensor], side: Literal["left", "right"] = "left") -> tuple[Tensor, Tensor]:
    """Stack (tokens_i, hidden) tensors into (batch, max_tokens, hidden) plus a 0/1 mask.

    Left padding for generation (every row's last position is a real token), either for training.
    """
    if not sequences:
        raise ValueError("pad_embeds needs at least one sequence")
    length = max(s.shape[0] for s in sequences)
    first = sequences[0]
    embeds = first.new_zeros(len(sequences), length, first.shape[-1])
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=first.device)
    for row, seq in enumerate(sequences):
        span = slice(length - seq.shape[0], length) if side == "left" else slice(0, seq.shape[0])
        embeds[row, span] = seq
        mask[row, span] = 1
    return embeds, mask
