"""The Item-Language Model: a frozen LLM that reads items and users through a trained bridge.

A prompt is text with placeholders, `<item:12>` and `<user:3>`. It is wrapped in the LLM's chat
template, split at the placeholders, and each placeholder is replaced by the bridge's vectors for
that item or user (the text-only bridge replaces it by the item's title instead). The result is
one sequence of input embeddings for the frozen LLM.

    model = ItemLanguageModel.from_pretrained("runs/stage2/demo/model")
    model.describe(0)                         # "What is <item:0> about?", answered
    model.recommend(history=[0, 49, 180], k=5)
    model.answer("I loved <item:11> and <item:12>; something lighter?")

The module (prompt layout, embeddings, loss, generation, saving) is here; what users call
(`describe`, `profile`, `recommend`, `explain`, `answer`) is `api.py`; the items and users the
model knows are `catalogue.py`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.io import atomic_folder, read_json_object
from itemlm.models.api import ItemLanguageAPI, check_prior_weight
from itemlm.models.bridges import load_bridge, save_bridge
from itemlm.models.catalogue import Catalogue
from itemlm.models.llm import EMBEDDED_GGUF, FrozenLLM, to_device
from itemlm.models.sentence_encoder import embed_sentences
from itemlm.models.consensus import SAMPLING, choose_consensus
from itemlm.models.constrained import TitleTrie
from itemlm.models.unknown_titles import UnknownTitles
from itemlm.tasks.templates import find_placeholders

MAX_CACHED_PIECES = 100_000  # token ids of prompt pieces kept (a few MB)

IGNORE = -100
NO_REPEAT_NGRAM = 3


@dataclass
class PromptBatch:
    """A batch laid out on the host; `ItemLanguageModel.embed` turns it into LLM inputs."""

    input_ids: Tensor  # (rows, time) token ids; padding and vector slots hold the pad id
    attention_mask: Tensor  # (rows, time), 1 = real token or vector
    labels: Tensor | None  # (rows, time) target token ids, -100 elsewhere; None for generation
    slot_positions: Tensor  # (slots,) flat (row * time + t) positions that take a bridge vector
    slot_sources: Tensor  # (slots,) which bridge output vector goes there (key * per_key + query)
    kinds: Tensor  # (keys,) 0 item, 1 user: the distinct placeholders of the batch
    cf: Tensor  # (keys, cf_dim) their CF vectors
    pooled: bool = False  # one vector per placeholder: the mean of the bridge's vectors (ranking prompts)
    unknown: Tensor | None = None  # (keys,) bool: items whose title slots take the unknown-title vectors

    def to(self, device: torch.device | str, pin_memory: bool = True) -> "PromptBatch":
        """Copy to `device`. To a GPU the copies go through pinned host memory without blocking,
        so they overlap with the work already queued there (`pin_memory=False`: plain copies)."""
        device = torch.device(device)
        values = (getattr(self, f.name) for f in fields(self))
        return PromptBatch(*(to_device(v, device, pin_memory) if isinstance(v, Tensor) else v for v in values))


class ItemLanguageModel(ItemLanguageAPI, nn.Module):
    def __init__(self, llm: FrozenLLM, bridge: nn.Module | None, bridge_kind: str, catalogue: Catalogue):
        super().__init__()
        self.llm = llm
        self.bridge = bridge
        self.bridge_kind = bridge_kind
        self.catalogue = catalogue
        self.pin_memory = True  # batches reach a GPU through pinned host memory (PromptBatch.to)
        self._piece_ids: OrderedDict[tuple[str, bool], list[int]] = OrderedDict()  # least recently used first
        self._trie: TitleTrie | None = None
        self._best_popularity: list[float] | None = None  # per trie node (popularity_bonus)
        self.popularity_prior = 0.0  # trie generation: weight of the items' popularity (0: the LLM alone)
        self.retriever_prior = 0.0  # trie generation: weight of the ranker's retriever on the prompt's history (0: none)
        self.trained_tasks: list[str] = []  # what stage 2 trained the bridge on (empty: not recorded)
        self.ranker = None  # ranking mode (itemlm.rank.Ranker): a retriever + head, when trained
        self.no_repeat_ngram = NO_REPEAT_NGRAM  # greedy answers never repeat a 3-gram (decode.forbid_repeated_ngrams)
        # free answers: 0 = greedy; n > 0 = the consensus of the greedy answer and n sampled ones (consensus.py)
        self.consensus = 0
        self.consensus_encoder: str | None = None  # the sentence encoder that judges agreement (None: the packaged MiniLM)
        # learned vectors for the title slots of items whose text training never read (unknown_titles.py);
        # `hide_all_titles` treats every item so (how those vectors train)
        self.unknown_titles: UnknownTitles | None = None
        self.hide_all_titles = False

    # ---------------------------------------------------------------- prompts -> embeddings
    def render_text_only(self, prompt: str) -> str:
        """The text-only bridge: items by title, users by their recent titles."""
        out, last = [], 0
        for kind, index, start, end in find_placeholders(prompt):
            self.check_placeholder(kind, index)
            out.append(prompt[last:start])
            if kind == "item":
                out.append(self.catalogue.titles[index])
            else:
                recent = [self.catalogue.titles[i] for i in self.catalogue.histories[index][-5:]]
                out.append(f"a user who recently chose {', '.join(recent)}" if recent else "a new user")
            last = end
        return "".join(out) + prompt[last:]

    def check_placeholder(self, kind: str, index: int) -> None:
        limit = self.catalogue.num_items if kind == "item" else len(self.catalogue.histories)
        if not 0 <= index < limit:
            raise InputError(f"<{kind}:{index}> is not in the catalogue (0..{limit - 1})")

    def _ids(self, piece: str, first: bool) -> list[int]:
        """The token ids of a prompt piece, cached (templates recur); a server's free texts do not grow the cache without end."""
        key = (piece, first)
        if key in self._piece_ids:
            self._piece_ids.move_to_end(key)
        else:
            self._piece_ids[key] = (
                self.llm.encode(piece) if first else self.llm.tokenizer(piece, add_special_tokens=False).input_ids
            )
            if len(self._piece_ids) > MAX_CACHED_PIECES:
                self._piece_ids.popitem(last=False)
        return self._piece_ids[key]

    def prompt_pieces(self, prompt: str, answer_prefix: str = "") -> list[list[int] | tuple[str, int]]:
        """The chat-formatted prompt as token-id runs and (kind, index) placeholders, in order.
        `answer_prefix`: text the assistant's answer starts with (generation continues it)."""
        if self.bridge is None:
            prompt = self.render_text_only(prompt)
        text = self.llm.format_chat([{"role": "user", "content": prompt}]) + answer_prefix
        pieces: list[list[int] | tuple[str, int]] = []
        last = 0
        for kind, index, start, end in find_placeholders(text):
            if start > last:
                pieces.append(self._ids(text[last:start], first=not pieces))
            self.check_placeholder(kind, index)
            pieces.append((kind, index))
            last = end
        if last < len(text):
            pieces.append(self._ids(text[last:], first=not pieces))
        return pieces

    def num_vectors(self) -> int:
        """How many LLM input vectors one item or user becomes (0 for the text-only bridge)."""
        bridge = getattr(self.bridge, "module", self.bridge)  # a bridge wrapped for DDP keeps its own in .module
        return 0 if bridge is None else int(bridge.num_tokens)

    def collate(
        self,
        prompts: list[str],
        targets: list[str] | None = None,
        max_target_tokens: int = 64,
        side: str = "right",
        pad_to_multiple: int = 1,
        pooled: bool = False,
        answer_prefixes: list[str] | None = None,
    ) -> PromptBatch:
        """Tokenize and lay out a batch on the host: token ids, mask, labels and where vectors go.

        Right padding for training (labels only on the target tokens), left padding for
        generation. Nothing here touches the accelerator; `embed` does the device work.
        `pooled`: each placeholder takes one vector, the mean of the bridge's vectors for it.
        """
        prefixes = answer_prefixes or [""] * len(prompts)
        pieces_list = [self.prompt_pieces(p, prefix) for p, prefix in zip(prompts, prefixes)]
        answers = self.target_ids(targets, max_target_tokens) if targets is not None else None
        keys = sorted({p for pieces in pieces_list for p in pieces if isinstance(p, tuple)})
        key_row = {key: row for row, key in enumerate(keys)}
        per_key = min(1, self.num_vectors()) if pooled else self.num_vectors()
        rows = []  # per row: token ids (-1 where a vector goes) and the vector sources of those slots
        for row, pieces in enumerate(pieces_list):
            ids, sources = [], []
            for piece in pieces:
                if isinstance(piece, tuple):
                    first = key_row[piece] * per_key
                    ids += [-1] * per_key
                    sources += range(first, first + per_key)
                else:
                    ids += piece
            if answers is not None:
                ids += answers[row]
            rows.append((ids, sources))
        length = max(len(ids) for ids, _ in rows)
        length = -(-length // pad_to_multiple) * pad_to_multiple
        pad = self.llm.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE, dtype=torch.long) if answers is not None else None
        slot_positions, slot_sources = [], []
        for row, (ids, sources) in enumerate(rows):
            offset = length - len(ids) if side == "left" else 0
            ids_tensor = torch.tensor(ids, dtype=torch.long)
            slots = (ids_tensor < 0).nonzero().squeeze(1)
            input_ids[row, offset : offset + len(ids)] = ids_tensor.clamp(min=0)
            input_ids[row, offset + slots] = pad
            mask[row, offset : offset + len(ids)] = 1
            slot_positions.append(row * length + offset + slots)
            slot_sources += sources
            if labels is not None and answers[row]:
                end = offset + len(ids)
                labels[row, end - len(answers[row]) : end] = torch.tensor(answers[row])
        item_rows = [index for kind, index in keys if kind == "item"]
        user_rows = [index for kind, index in keys if kind == "user"]
        unknown = None
        if self.unknown_titles is not None:
            held_out = self.catalogue.text_held_out
            unknown = torch.tensor([kind == "item" and (self.hide_all_titles or bool(held_out[index])) for kind, index in keys], dtype=torch.bool)
        return PromptBatch(
            input_ids=input_ids,
            attention_mask=mask,
            labels=labels,
            slot_positions=torch.cat(slot_positions) if slot_positions else torch.zeros(0, dtype=torch.long),
            slot_sources=torch.tensor(slot_sources, dtype=torch.long),
            kinds=torch.tensor([0 if kind == "item" else 1 for kind, _ in keys], dtype=torch.long),
            cf=torch.as_tensor(np.concatenate([self.catalogue.item_vectors[item_rows], self.catalogue.user_vectors[user_rows]]), dtype=torch.float32),
            pooled=pooled,
            unknown=unknown,
        )

    def embed(self, batch: PromptBatch) -> Tensor:
        """Input embeddings on the LLM's device: token embeddings with the bridge's vectors spliced in.

        One bridge call for every distinct item and user of the batch, one embedding lookup and
        one scatter; the batch's index tensors were built on the host (`collate`).
        """
        batch = batch.to(self.llm.device, self.pin_memory)
        embeds = self.llm.embed(batch.input_ids)
        if self.bridge is None:
            return embeds
        if len(batch.kinds) == 0:
            # no item in the batch: the bridge still takes part (with no effect), so that every
            # process of a distributed run runs the same bridge forward and backward
            return embeds + 0.0 * self.bridge(batch.cf.new_zeros(1, batch.cf.shape[1]), batch.kinds.new_zeros(1)).sum()
        # items and users were laid out in `collate` as: items first, then users
        # the bridge computes in float32 whatever the LLM's type: the warm start solves its head on
        # float32 outputs, and a bfloat16 forward loses that fit (docs/benchmarks.md, "float type")
        vectors = self.bridge(batch.cf, batch.kinds)
        if self.unknown_titles is not None and batch.unknown is not None:
            vectors = self.unknown_titles(vectors, batch.unknown)
        if batch.pooled:
            vectors = vectors.mean(1, keepdim=True)
        flat = vectors.reshape(-1, vectors.shape[-1]).to(embeds.dtype).index_select(0, batch.slot_sources)
        hidden = embeds.shape[-1]
        return embeds.reshape(-1, hidden).index_copy(0, batch.slot_positions, flat).view(embeds.shape)

    # ---------------------------------------------------------------- training
    def target_ids(self, targets: list[str], max_tokens: int = 64) -> list[list[int]]:
        """Token ids of answers (one batched tokenizer call), each ending in EOS, cut to `max_tokens`."""
        eos = self.llm.tokenizer.eos_token_id
        encoded = self.llm.tokenizer(list(targets), add_special_tokens=False).input_ids
        return [(ids + ([eos] if eos is not None else []))[:max_tokens] for ids in encoded]

    def batch(self, prompts: list[str], targets: list[str], max_target_tokens: int = 64) -> tuple[Tensor, Tensor, Tensor]:
        """Right-padded (embeddings, attention mask, labels); labels only on the target tokens."""
        batch = self.collate(prompts, targets, max_target_tokens)
        return self.embed(batch), batch.attention_mask, batch.labels

    def loss_on(self, batch: PromptBatch, reduction: str = "mean") -> tuple[Tensor, int]:
        """The next-token loss of a collated batch and how many label tokens it covers."""
        out = self.llm.forward_embeds(self.embed(batch), batch.attention_mask, batch.labels, reduction=reduction)
        return out.loss, out.num_tokens

    def loss(self, prompts: list[str], targets: list[str], max_target_tokens: int = 64) -> tuple[Tensor, int]:
        return self.loss_on(self.collate(prompts, targets, max_target_tokens))

    @torch.no_grad()
    def reference_nll(self, prompts: list[str], targets: list[str], max_target_tokens: int = 64) -> np.ndarray:
        """Per example, the mean negative log-likelihood (nats per token) of `targets` given `prompts`."""
        batch = self.collate(prompts, targets, max_target_tokens)
        losses, _ = self.loss_on(batch, reduction="none")
        # forward_embeds keeps labelled positions in row-major order: split them back per row
        counts = ((batch.labels[:, 1:] != IGNORE) & batch.attention_mask[:, :-1].bool()).sum(1).tolist()
        return np.array([chunk.float().mean().item() for chunk in losses.split(counts)])

    # ---------------------------------------------------------------- inference
    def encode_prompts(self, prompts: list[str], answer_prefixes: list[str] | None = None) -> tuple[Tensor, Tensor]:
        """Left-padded prompt embeddings and mask, ready for generation."""
        if isinstance(prompts, str):  # a string is a sequence too: it would become one prompt per character
            raise InputError("prompts must be a list of strings; for one prompt pass [prompt]")
        batch = self.collate(prompts, side="left", answer_prefixes=answer_prefixes)
        return self.embed(batch), batch.attention_mask

    @torch.no_grad()
    def generate(
        self, prompts: list[str], max_new_tokens: int = 48, answer_prefixes: list[str] | None = None, consensus: int | None = None,
    ) -> list[str]:
        """Greedy answers; with `answer_prefixes`, each answer continues its prefix (returned without it).

        consensus: n > 0 samples n more answers per prompt and returns, of those and the greedy one,
        the answer the others agree with most (`itemlm.models.consensus`; seeded: the same prompts
        give the same answers); None: the model's `consensus` (0 unless set)."""
        samples = self.consensus if consensus is None else consensus
        if samples < 0:
            raise InputError(f"consensus must be a number of extra answers >= 0, got {samples}")
        embeds, mask = self.encode_prompts(prompts, answer_prefixes)
        texts = self.llm.generate_embeds(embeds, mask, max_new_tokens, no_repeat_ngram=self.no_repeat_ngram).texts
        if samples:
            generator = torch.Generator(device=embeds.device).manual_seed(0)
            drawn = self.llm.generate_embeds(
                embeds.repeat_interleave(samples, 0), mask.repeat_interleave(samples, 0), max_new_tokens, do_sample=True,
                generator=generator, no_repeat_ngram=self.no_repeat_ngram, **SAMPLING,
            ).texts
            candidates = [[texts[row]] + drawn[row * samples : (row + 1) * samples] for row in range(len(texts))]
            texts = choose_consensus(candidates, lambda flat: embed_sentences(flat, self.consensus_encoder))
        return [t.strip() for t in texts] if answer_prefixes is None else [t.rstrip() for t in texts]

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Bridge weights + config + the LLM's name + the catalogue, in one folder (atomically)."""
        folder = Path(folder)
        llm = None if self.llm.source.endswith(EMBEDDED_GGUF) else self.llm.source  # None: the embedded default
        if llm is not None and Path(llm).expanduser().exists():  # a local folder or file: found again from any directory
            llm = str(Path(llm).expanduser().resolve())
        with atomic_folder(folder) as staging:
            save_bridge(self.bridge, staging, {"bridge": self.bridge_kind, "llm": llm, **(meta or {})})
            self.catalogue.save(staging)
            if self.unknown_titles is not None:
                self.unknown_titles.save(staging)
            if self.ranker is not None:
                self.ranker.save_pretrained(staging / "ranking")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, llm: FrozenLLM | None = None, dtype: str = "float32") -> "ItemLanguageModel":
        folder = Path(folder)
        if not (folder / "bridge.json").exists():
            raise InputError("not an itemlm model folder (no bridge.json); train one with `itemlm stage2`", path=folder)
        meta = read_json_object(folder / "bridge.json", "bridge.json")
        llm = llm or FrozenLLM.load(meta.get("llm") or None, dtype=dtype)
        llm.system_prompt = meta.get("system_prompt")  # what the bridge was trained with (older models: the default)
        bridge, meta = load_bridge(folder, llm.hidden_size)
        if bridge is not None:
            bridge.eval()
        model = cls(llm, bridge, meta["bridge"], Catalogue.load(folder))
        model.unknown_titles = UnknownTitles.load(folder)
        for field in ("popularity_prior", "retriever_prior"):
            weight = meta.get(field, 0.0)
            check_prior_weight(field, weight, path=folder / "bridge.json")
            setattr(model, field, float(weight))
        model.trained_tasks = [str(task) for task in meta.get("tasks") or []]
        if (folder / "ranking").is_dir():
            from itemlm.rank.ranker import Ranker

            model.ranker = Ranker.from_pretrained(folder / "ranking")
        if model.retriever_prior and model.ranker is None:
            raise InputError("retriever_prior is set but the model has no ranking/ folder with a retriever", path=folder / "bridge.json")
        return model
