"""Bridges: how an item (or a user) becomes vectors in the frozen LLM's input.

    ilm        the stage-1 Q-Former's query outputs -> `LinearAdapter` -> Q vectors (the paper);
               `adapter="all-query"` reads all Q outputs of an item at once instead (see `ADAPTERS`)
    ilm-rand   the same, with a randomly initialized Q-Former (no stage 1)
    mlp        CoLLM-style: CF vector -> two-layer MLP -> `num_tokens` vectors
    text-only  no vectors at all: the prompt names items by title (what a plain LLM gets)

A bridge maps CF vectors [B, cf_dim] and kinds [B] (0 item, 1 user) to [B, num_tokens, llm_hidden].
Every trainable bridge ends in one linear layer, `head`, applied to `head_inputs(cf, kind)`: the
warm start can set it in closed form (itemlm.train.warm_start).
Only bridges are trained in stage 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.io import read_json, read_safetensors
from itemlm.models.qformer import ItemQFormer
from itemlm.variants import BRIDGES



ADAPTERS = ("shared", "all-query")
"""How the Q-Former's query outputs become LLM vectors:

    shared     one linear map applied to each query output (the paper's adapter): hidden -> LLM size
    all-query  one linear map from all of an item's query outputs to all of its vectors:
               Q x hidden -> Q x LLM size. Each vector gets its own columns, as the MLP's do, so
               the warm start's closed form can write titles as well as the MLP's head (nearest-token
               accuracy 0.94 on ML-100K, the shared map 0.11: benchmarks/qformer_head_fit.py), and
               the stage-1 Q-Former need not be rewritten by gradient steps to get there.
"""


class LinearAdapter(nn.Module):
    """One linear map into the LLM's hidden size (to `out_dim`, a multiple of it for all-query)."""

    def __init__(self, in_dim: int, out_dim: int, output_scale: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        # Start the outputs at the typical norm of the LLM's own token embeddings.
        nn.init.normal_(self.proj.weight, std=output_scale / in_dim**0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class QFormerBridge(nn.Module):
    def __init__(self, qformer: ItemQFormer, llm_hidden: int, output_scale: float = 1.0, adapter: str = "shared"):
        super().__init__()
        if adapter not in ADAPTERS:
            raise InputError(f"unknown Q-Former adapter '{adapter}' (expected one of {', '.join(ADAPTERS)})")
        self.qformer, self.llm_hidden, self.adapter_kind = qformer, llm_hidden, adapter
        hidden, queries = qformer.config.hidden, qformer.config.num_queries
        if adapter == "shared":
            self.adapter = LinearAdapter(hidden, llm_hidden, output_scale)
        else:
            self.adapter = LinearAdapter(queries * hidden, queries * llm_hidden, output_scale)

    @property
    def num_tokens(self) -> int:
        return self.qformer.config.num_queries

    def forward(self, cf: Tensor, kind: Tensor) -> Tensor:
        return self.adapter(self.head_inputs(cf, kind)).view(cf.shape[0], self.num_tokens, self.llm_hidden)

    def head_inputs(self, cf: Tensor, kind: Tensor) -> Tensor:
        """What the last linear layer (`head`) reads: [B, num_queries, hidden] query outputs, or
        [B, num_queries * hidden] for the all-query adapter."""
        query = self.qformer.encode_items(cf, kind)
        return query if self.adapter_kind == "shared" else query.flatten(1)

    @property
    def head(self) -> nn.Linear:
        return self.adapter.proj


class MLPBridge(nn.Module):
    """CoLLM's mapping: CF vector -> hidden -> `num_tokens` LLM-sized vectors (ReLU between)."""

    def __init__(self, cf_dim: int, llm_hidden: int, num_tokens: int = 1, hidden: int | None = None, cf_scale: float = 1.0, output_scale: float = 1.0):
        super().__init__()
        hidden = hidden or 4 * llm_hidden
        self.num_tokens, self.llm_hidden, self.cf_scale = num_tokens, llm_hidden, cf_scale
        self.kind_embedding = nn.Embedding(2, cf_dim)  # a user is a special item here too
        self.mlp = nn.Sequential(nn.Linear(cf_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_tokens * llm_hidden))
        nn.init.normal_(self.mlp[2].weight, std=output_scale / hidden**0.5)

    def forward(self, cf: Tensor, kind: Tensor) -> Tensor:
        return self.head(self.head_inputs(cf, kind)).view(cf.shape[0], self.num_tokens, self.llm_hidden)

    def head_inputs(self, cf: Tensor, kind: Tensor) -> Tensor:
        """What the last linear layer (`head`) reads: [B, hidden] activations."""
        return self.mlp[1](self.mlp[0](cf * self.cf_scale + self.kind_embedding(kind)))

    @property
    def head(self) -> nn.Linear:
        return self.mlp[2]


def freeze_unused(bridge: nn.Module, cf_dim: int) -> list[str]:
    """Freeze the parameters a bridge's forward never reaches (the stage-1 Q-Former keeps its
    text-side heads); returns their names. Distributed training needs this: DDP expects every
    trainable parameter to get a gradient at every step."""
    cf = torch.zeros(2, cf_dim)
    kind = torch.tensor([0, 1])
    device = next(bridge.parameters()).device
    bridge(cf.to(device), kind.to(device)).sum().backward()
    unused = [name for name, p in bridge.named_parameters() if p.requires_grad and p.grad is None]
    for name, parameter in bridge.named_parameters():
        parameter.grad = None
        if name in unused:
            parameter.requires_grad_(False)
    return unused


def save_bridge(bridge: nn.Module | None, folder: Path, meta: dict) -> None:
    """Bridge weights (+ the Q-Former as its own `from_pretrained` folder) and `bridge.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(bridge, QFormerBridge):
        bridge.qformer.save_pretrained(folder / "qformer")
        state = {f"adapter.{k}": v for k, v in bridge.adapter.state_dict().items()}
    elif bridge is not None:
        state = bridge.state_dict()
    else:
        state = {}
    if state:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / "bridge.safetensors"))
    (folder / "bridge.json").write_text(json.dumps(meta, indent=2))


def load_bridge(folder: Path, llm_hidden: int) -> tuple[nn.Module | None, dict]:
    meta_path = folder / "bridge.json"
    if not meta_path.exists():
        raise InputError("not an itemlm model folder (no bridge.json)", path=folder)
    meta = read_json(meta_path, "bridge.json")
    kind = meta.get("bridge") if isinstance(meta, dict) else None
    if kind == "text-only":
        return None, meta
    if kind not in ("ilm", "ilm-rand", "mlp"):
        raise InputError(f"unknown bridge '{kind}' (expected one of {', '.join(BRIDGES)})", path=meta_path)
    state = read_safetensors(folder / "bridge.safetensors", "bridge weights file")
    try:
        if kind == "mlp":
            bridge = MLPBridge(meta["cf_dim"], llm_hidden, meta["num_tokens"], meta["mlp_hidden"], meta["cf_scale"])
            bridge.load_state_dict(state)
        else:
            bridge = QFormerBridge(ItemQFormer.from_pretrained(folder / "qformer"), llm_hidden, adapter=meta.get("adapter", "shared"))
            bridge.adapter.load_state_dict({k.removeprefix("adapter."): v for k, v in state.items()})
    except (KeyError, TypeError, RuntimeError) as error:  # a field missing from bridge.json, weights of another shape
        detail = str(error).splitlines()[0][:160]
        raise InputError(f"the bridge's weights do not fit its bridge.json ({type(error).__name__}: {detail})", path=folder) from None
    return bridge, meta


def trainable_parameters(module: nn.Module | None) -> list[nn.Parameter]:
    return [] if module is None else [p for p in module.parameters() if p.requires_grad]


def count_parameters(module: nn.Module | None) -> int:
    return sum(p.numel() for p in trainable_parameters(module))

