"""Beam decoding that keeps one copy of each prompt's keys and values, however many beams it has.

Beam search over catalogue titles expands every prompt (~100-250 tokens) into 10 beams that differ
only in the few tokens they have written. A plain KV cache holds the prompt once per beam and
copies all of it at every step (the beams are reordered, then the new token is appended): about a
third of the search's time on 2 CPU cores. Here the prompt part stays as prefilled, one row per
prompt, and only each beam's own tokens are kept (and reordered) per beam. Attention for a beam's
new token is computed over the two parts with one softmax: the prompt part with the queries of
all of a prompt's beams stacked in one matrix product against that prompt's keys (no copy of
them), the beam's own part per beam.

It plugs into a Hugging Face decoder as an attention implementation selected for the decode steps
only (`attention_over_shared_prompt`), for the model families whose attention is plain causal
softmax attention (`supports_shared_prompt`); other models decode with the usual cache. The
switch is the model config's, so one model decodes in one thread at a time (`itemlm serve` runs
every request on one model thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

ATTENTION_NAME = "itemlm_shared_prompt"
PLAIN_ATTENTION_FAMILIES = ("llama", "qwen2", "qwen3")  # causal softmax attention, no window, no logit capping


def supports_shared_prompt(model: nn.Module) -> bool:
    """Whether `model` (a Hugging Face causal LM) runs its attention through the attention
    interface and attends with plain causal softmax attention over every earlier token."""
    config = model.config
    if config.model_type not in PLAIN_ATTENTION_FAMILIES or not getattr(model, "_supports_attention_backend", False):
        return False
    return not getattr(config, "use_sliding_window", False)


class BeamLayer(DynamicLayer):
    """One decoder layer's cache: the prompts' keys and values (one row per prompt), and each
    beam's own, which are what `keys` / `values` hold and what is reordered."""

    def __init__(self, prompt_keys: Tensor, prompt_values: Tensor):
        super().__init__()
        self.prompt_keys, self.prompt_values = prompt_keys, prompt_values
        rows, heads, _, dim = prompt_keys.shape
        self.lazy_initialization(prompt_keys, prompt_values)
        self.keys = prompt_keys.new_empty(rows, heads, 0, dim)
        self.values = prompt_values.new_empty(rows, heads, 0, dim)

    def get_seq_length(self) -> int:
        return self.prompt_keys.shape[-2] + self.keys.shape[-2]

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.keys = self.keys.index_select(0, beam_idx)
        self.values = self.values.index_select(0, beam_idx)


class SharedPromptCache(Cache):
    """A prefilled `DynamicCache` turned into per-prompt and per-beam parts (see the module)."""

    def __init__(self, prefilled: DynamicCache, prompt_mask: Tensor):
        super().__init__(layers=[BeamLayer(layer.keys, layer.values) for layer in prefilled.layers])
        self.prompt_mask = prompt_mask.bool()  # (prompts, prompt tokens), False on padding
        self.select_beams(torch.arange(prompt_mask.shape[0], device=prompt_mask.device))

    def reorder_cache(self, beam_idx: Tensor) -> None:
        super().reorder_cache(beam_idx)
        self.select_beams(self.beam_prompt[beam_idx])

    def select_beams(self, beam_prompt: Tensor) -> None:
        """Which prompt each beam continues, and its slot in a (prompts x slots) grid: beams of one
        prompt are stacked in one matrix product over that prompt's keys."""
        self.beam_prompt = beam_prompt
        prompts = self.prompt_mask.shape[0]
        counts = torch.bincount(beam_prompt, minlength=prompts)
        self.slots = max(int(counts.max()), 1) if len(beam_prompt) else 1
        order = torch.argsort(beam_prompt, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(beam_prompt)
        slot[order] = torch.arange(len(beam_prompt), device=beam_prompt.device) - starts[beam_prompt[order]]
        self.grid_index = beam_prompt * self.slots + slot  # beam -> row of the flattened grid


def _to_grid(per_beam: Tensor, cache: SharedPromptCache) -> Tensor:
    """(beams, heads, G, X) -> (prompts, heads, slots * G, X), zeros in empty slots."""
    beams, heads, group, width = per_beam.shape
    prompts = cache.prompt_mask.shape[0]
    grid = per_beam.new_zeros(prompts * cache.slots, heads, group, width)
    grid[cache.grid_index] = per_beam
    return grid.view(prompts, cache.slots, heads, group, width).transpose(1, 2).reshape(prompts, heads, cache.slots * group, width)


def _from_grid(grid: Tensor, cache: SharedPromptCache, group: int) -> Tensor:
    """The inverse of `_to_grid`: (prompts, heads, slots * G, X) -> (beams, heads, G, X)."""
    prompts, heads, _, width = grid.shape
    flat = grid.view(prompts, heads, cache.slots, group, width).transpose(1, 2).reshape(prompts * cache.slots, heads, group, width)
    return flat[cache.grid_index]


def shared_prompt_attention(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, shared_prompt: SharedPromptCache | None = None, **kwargs,
) -> tuple[Tensor, None]:
    """Attention of one new token per beam over its prompt's and its own keys; `key` / `value`
    are the beam's own (the cache's update returns those). Returns (beams, 1, heads, dim)."""
    if shared_prompt is None or query.shape[2] != 1:
        raise RuntimeError("shared-prompt attention reads one new token per beam with its SharedPromptCache")
    layer = shared_prompt.layers[module.layer_idx]
    beams, query_heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = query_heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(beams, kv_heads, group, dim)  # query head h reads key head h // group
    prompt_scores = _to_grid(q, shared_prompt) @ layer.prompt_keys.transpose(-1, -2) * scale
    prompt_scores = prompt_scores.masked_fill(~shared_prompt.prompt_mask[:, None, None, :], float("-inf"))
    own_scores = q @ key.transpose(-1, -2) * scale
    scores = torch.cat([_from_grid(prompt_scores, shared_prompt, group), own_scores], dim=-1)
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    prompt_weights, own_weights = weights.split([layer.prompt_keys.shape[-2], key.shape[-2]], dim=-1)
    out = _from_grid(_to_grid(prompt_weights, shared_prompt) @ layer.prompt_values, shared_prompt, group)
    out = out + own_weights @ value
    return out.reshape(beams, 1, query_heads, dim), None


AttentionInterface.register(ATTENTION_NAME, shared_prompt_attention)


@contextmanager
def attention_over_shared_prompt(model: nn.Module) -> Iterator[None]:
    """Run the model's attention as `shared_prompt_attention` inside the block (decode steps)."""
    before = model.config._attn_implementation
    model.config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        model.config._attn_implementation = before
