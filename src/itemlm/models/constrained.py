"""Recommend only real catalogue items: beam search over a prefix tree (trie) of item titles.

Every title is tokenized the way the model would write it as its answer, followed by an end
marker (the EOS token by default), so "Heat" + EOS and "Heat (1995)" + EOS are different paths
that both stay reachable. At each step a beam may only take the tokens its trie node allows, so
each finished beam *is* a catalogue title; its score is the sequence log-probability under the
unconstrained model (sum of log-softmax over the full vocabulary, end marker included).

Items that share a title share a trie path. Rule: a title stands for *all* its items; they are
returned together, in ascending item index, with the same score, each counting toward k.
Exclusions (e.g. items the user already consumed) are by item index: an excluded item is never
returned, and a title's branch is pruned only when every item with that title is excluded.

Search is exact in one respect: log-probabilities only fall as a sequence grows, so a prompt stops
as soon as its best live beam cannot beat its k-th finished item. Keeping only `num_beams` live
prefixes per step is the usual beam-search approximation; with num_beams >= the number of
distinct prefixes at every depth (e.g. >= the number of titles) the result is exact.

A prior over items can join the search (`node_bonus`): each prefix's score is its log-probability
plus `weight x` the largest log prior among the items below it (`TitleTrie.prefix_best`). That
bound only falls as the prefix grows, so the early stop stays exact, and a finished title scores
log p(title) + weight x log prior(title) (a shared title: its items' largest prior): the LLM and
the prior decoded jointly rather than re-ranked afterwards, so beams are not spent on titles the
prior rules out. Each prompt can have its own prior (a user's retriever scores): `prefix_best_rows`
bounds a batch of priors at once and the search takes their [prompts, nodes] bonus.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from itemlm.errors import InputError
from itemlm.models.llm import FrozenLLM

ROOT = 0


class TitleTrie:
    """Prefix tree over token-id sequences; node 0 is the root, sequences end at terminal nodes."""

    def __init__(self, sequences: Sequence[Sequence[int]], titles: Sequence[str] | None = None):
        self.children: list[dict[int, int]] = [{}]  # node -> {token id: child node}
        self.parent: list[int] = [-1]
        self.token: list[int] = [-1]  # the token that leads into each node
        self.items: list[list[int]] = [[]]  # node -> items whose sequence ends here (ascending)
        self.terminal: list[int] = []  # item -> the node its sequence ends at
        self.titles = list(titles) if titles is not None else None
        self._tensors: tuple[Tensor, list[tuple[Tensor, Tensor]]] | None = None  # prefix_best_rows' index, built once
        for item, sequence in enumerate(sequences):
            if len(sequence) == 0:
                raise ValueError(f"item {item} has an empty token sequence")
            node = ROOT
            for token in sequence:
                child = self.children[node].get(int(token))
                if child is None:
                    child = len(self.children)
                    self.children[node][int(token)] = child
                    self.children.append({})
                    self.parent.append(node)
                    self.token.append(int(token))
                    self.items.append([])
                node = child
            self.items[node].append(item)
            self.terminal.append(node)

    @classmethod
    def from_titles(
        cls, tokenizer: Any, titles: Sequence[str], prefix: str = "", end: int | str | None = None
    ) -> TitleTrie:
        """Tokenize `prefix + title` as the model would generate it, then add the end marker.

        prefix: text the answer starts with before the title (" " after a plain "Assistant:").
        end:    None = the tokenizer's EOS id; an int = that token id; a str = text appended before
                tokenizing (e.g. "\\n" when answers are lists, one title per line).
        """
        for item, title in enumerate(titles):
            if not isinstance(title, str) or not title.strip():
                raise InputError(f"item {item} has no title; constrained decoding needs one for every item")
        suffix = end if isinstance(end, str) else ""
        sequences = tokenizer([prefix + t + suffix for t in titles], add_special_tokens=False).input_ids
        if not isinstance(end, str):
            end_id = tokenizer.eos_token_id if end is None else int(end)
            if end_id is None:
                raise InputError("the tokenizer has no EOS token; pass end= a token id or a text such as '\\n'")
            sequences = [list(s) + [end_id] for s in sequences]
        return cls(sequences, titles)

    def __len__(self) -> int:
        return len(self.terminal)

    def node_of(self, prefix_ids: Sequence[int]) -> int | None:
        node = ROOT
        for token in prefix_ids:
            node = self.children[node].get(int(token))
            if node is None:
                return None
        return node

    def allowed_next(self, prefix_ids: Sequence[int]) -> list[int]:
        """Tokens that keep `prefix_ids` on some title's path (empty off the trie or at an end)."""
        node = self.node_of(prefix_ids)
        return [] if node is None else sorted(self.children[node])

    def items_for(self, token_ids: Sequence[int]) -> list[int]:
        """Items whose full sequence (end marker included) is `token_ids`."""
        node = self.node_of(token_ids)
        return [] if node is None else list(self.items[node])

    def sequence(self, item: int) -> list[int]:
        tokens, node = [], self.terminal[item]
        while node != ROOT:
            tokens.append(self.token[node])
            node = self.parent[node]
        return tokens[::-1]

    def prefix_best(self, item_log_prior: Sequence[float]) -> list[float]:
        """Per node: the largest prior among the items whose sequence passes through it (-inf where
        none). It never rises from a node to its children, and it bounds every title below the node
        exactly, so a beam ranked by log-probability + weight x this keeps the titles the prior favours."""
        if len(item_log_prior) != len(self):
            raise ValueError(f"the prior has {len(item_log_prior)} values for {len(self)} items")
        return self.prefix_best_rows(torch.as_tensor(np.asarray(item_log_prior, dtype=np.float64))[None])[0].tolist()

    def prefix_best_rows(self, item_log_prior: Tensor) -> Tensor:
        """`prefix_best` for several priors at once: [rows, items] -> [rows, nodes], one pass per depth."""
        if item_log_prior.dim() != 2 or item_log_prior.shape[1] != len(self):
            raise ValueError(f"the priors have shape {tuple(item_log_prior.shape)}; expected [rows, {len(self)}]")
        rows = item_log_prior.shape[0]
        terminal, levels = self._tensor_index()
        best = item_log_prior.new_full((rows, len(self.children)), -math.inf)
        best.scatter_reduce_(1, terminal.expand(rows, -1), item_log_prior, reduce="amax")
        for nodes, parents in levels:  # deepest first: a node's value is final before it reaches its parent
            best.scatter_reduce_(1, parents.expand(rows, -1), best[:, nodes], reduce="amax")
        return best

    def _tensor_index(self) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Built once: each item's end node, and (nodes, their parents) for each depth below the root, deepest first."""
        if self._tensors is None:
            depth = [0] * len(self.children)
            by_depth: dict[int, list[int]] = {}
            for node in range(1, len(self.children)):  # a child is always numbered after its parent
                depth[node] = depth[self.parent[node]] + 1
                by_depth.setdefault(depth[node], []).append(node)
            levels = [(torch.tensor(nodes), torch.tensor([self.parent[n] for n in nodes]))
                      for _, nodes in sorted(by_depth.items(), reverse=True)]
            self._tensors = (torch.tensor(self.terminal, dtype=torch.long), levels)
        return self._tensors

    def dead_nodes(self, excluded: set[int]) -> set[int]:
        """Nodes below which no allowed item remains, given excluded item indices."""
        removed: dict[int, int] = {}
        for item in excluded:
            if not 0 <= item < len(self):
                raise ValueError(f"excluded item {item} is outside the catalogue of {len(self)} items")
            node = self.terminal[item]
            removed[node] = removed.get(node, 0) + 1
        closed = {node for node, n in removed.items() if n == len(self.items[node])}  # no item left
        dead: set[int] = set()
        dead_children: dict[int, int] = {}
        for start in closed:
            node = start
            while node != -1 and node not in dead:
                has_item = bool(self.items[node]) and node not in closed
                if has_item or dead_children.get(node, 0) < len(self.children[node]):
                    break
                dead.add(node)
                parent = self.parent[node]
                dead_children[parent] = dead_children.get(parent, 0) + 1
                node = parent
        return dead


@torch.no_grad()
def constrained_beam_search(
    llm: FrozenLLM,
    inputs_embeds: Tensor,
    attention_mask: Tensor,
    trie: TitleTrie,
    num_beams: int = 10,
    k: int = 10,
    exclude_items: Iterable[int] | Sequence[Iterable[int]] | None = None,
    node_bonus: Sequence[float] | Tensor | None = None,
) -> list[list[tuple[int, float]]]:
    """Top-k distinct catalogue items per (left-padded) prompt, as (item index, score): the
    log-probability, plus the bonus of the title's end node when `node_bonus` is given.

    exclude_items: one collection of item indices for every prompt, or one collection per prompt.
    node_bonus: a score per trie node added to each prefix's log-probability, one list for every
    prompt or a [prompts, nodes] tensor (a prior per prompt); it must not rise from a node to its
    children (e.g. `weight * trie.prefix_best(log_prior)`, weight >= 0, or `trie.prefix_best_rows`).
    Fewer than k items come back only when the beams run out (small catalogue, many exclusions,
    or num_beams much smaller than k).
    """
    rows = inputs_embeds.shape[0]
    bonus = _bonus_per_prompt(node_bonus, rows, len(trie.children))
    excluded = _per_prompt(exclude_items, rows)
    dead = [trie.dead_nodes(ex) for ex in excluded]
    logits, state = llm.prefill(inputs_embeds, attention_mask)
    state = llm.share_prompt(state)  # the beams of a prompt read one copy of its keys and values
    beams = [(0.0, ROOT, row) for row in range(rows) if ROOT not in dead[row]]  # (score, node, prompt)
    if len(beams) < rows:  # prompts whose every item is excluded get nothing
        keep = torch.tensor([b[2] for b in beams], dtype=torch.long, device=llm.device)
        state.select(keep)
        logits = logits[keep]
    found: list[list[tuple[float, int]]] = [[] for _ in range(rows)]  # (score, item) per prompt

    while beams:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        candidates: list[list[tuple[float, int, int, int]]] = [[] for _ in range(rows)]
        # every beam's allowed moves, scored by one gather and one copy to the host per step
        moves = [(beam, tok, child) for beam, (_, node, row) in enumerate(beams)
                 for tok, child in trie.children[node].items() if child not in dead[row]]
        where = torch.tensor([(beam, tok) for beam, tok, _ in moves], dtype=torch.long, device=logprobs.device).view(-1, 2)
        for (beam, tok, child), lp in zip(moves, logprobs[where[:, 0], where[:, 1]].tolist()):
            score, _, row = beams[beam]
            candidates[row].append((score + lp + bonus[row][child], score + lp, child, beam, tok))

        next_beams, sources, tokens = [], [], []
        for row in range(rows):
            live = []
            for cand in candidates[row]:
                ranked, child = cand[0], cand[2]
                items = [i for i in trie.items[child] if i not in excluded[row]]
                found[row] += [(ranked, i) for i in items]
                if any(c not in dead[row] for c in trie.children[child].values()):
                    live.append(cand)
            best = heapq.nlargest(num_beams, live, key=lambda c: c[0])
            if best and len(found[row]) >= k and best[0][0] <= heapq.nlargest(k, found[row])[-1][0]:
                best = []  # no live prefix can beat the k-th item found: this prompt is done
            for _, score, child, beam, tok in best:
                next_beams.append((score, child, row))
                sources.append(beam)
                tokens.append(tok)
        if not next_beams:
            break
        state.select(torch.tensor(sources, dtype=torch.long, device=llm.device))
        logits = llm.decode_step(torch.tensor(tokens, dtype=torch.long, device=llm.device), state)
        beams = next_beams

    return [[(item, score) for score, item in sorted(found[row], key=lambda f: (-f[0], f[1]))[:k]]
            for row in range(rows)]


def _bonus_per_prompt(node_bonus: Sequence[float] | Tensor | None, rows: int, nodes: int) -> list[list[float]]:
    """One list of node bonuses per prompt (the same list object where every prompt shares it)."""
    if node_bonus is None:
        return [[0.0] * nodes] * rows
    if isinstance(node_bonus, Tensor) and node_bonus.dim() == 2:
        if tuple(node_bonus.shape) != (rows, nodes):
            raise ValueError(f"node_bonus has shape {tuple(node_bonus.shape)} for {rows} prompts and a trie of {nodes} nodes")
        return node_bonus.tolist()
    shared = node_bonus.tolist() if isinstance(node_bonus, Tensor) else list(node_bonus)
    if len(shared) != nodes:
        raise ValueError(f"node_bonus has {len(shared)} values for a trie of {nodes} nodes")
    return [shared] * rows


def _per_prompt(exclude_items: Any, rows: int) -> list[set[int]]:
    if exclude_items is None:
        return [set() for _ in range(rows)]
    exclude_items = list(exclude_items)
    if all(isinstance(x, Integral) for x in exclude_items):
        shared = {int(x) for x in exclude_items}
        return [shared for _ in range(rows)]
    if len(exclude_items) != rows:
        raise ValueError(f"exclude_items has {len(exclude_items)} collections for {rows} prompts")
    return [{int(x) for x in collection} for collection in exclude_items]
