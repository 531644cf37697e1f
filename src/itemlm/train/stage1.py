"""Stage-1 recipe: pre-train the item Q-Former on item-text alignment (+ item-item / user-item).

Read it top to bottom: config -> data and CF embeddings -> model -> loop -> evaluation.

    itemlm stage1 --config stage1-quick              # the ML-100K demo preset
    itemlm stage1 --config stage1-quick variant=ilm-it-ii steps=600
    itemlm stage1 --config my.yaml --resume          # continue an interrupted run exactly

Variants: ilm-it (ITC + ITM + ITG), ilm-it-ii (+ item-item contrastive), ilm-it-ui (+ user-item
contrastive), ilm-it-ii-ui (both). `init: random` gives the ILM-rand Q-Former (no BERT weights);
`steps: 0` saves it untrained, which is what the ILM-rand baseline of stage 2 starts from.
"""

from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from itemlm.cf.mf import CFEmbeddings, MFConfig, load_or_train_mf
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.data.stage1_data import Stage1Batch, Stage1Data
from itemlm.errors import InputError
from itemlm.io import atomic_write_text
from itemlm.models import stage1_losses as losses
from itemlm.models.qformer import ItemQFormer, load_tokenizer
from itemlm.train.checkpoint import CheckpointManager, MetricsLog
from itemlm.train.memory import return_freed_memory
from itemlm.train.schedule import warmup_cosine
from itemlm.train.update import update_parameters

VARIANTS = {
    "ilm-it": (),
    "ilm-it-ii": ("ii",),
    "ilm-it-ui": ("ui",),
    "ilm-it-ii-ui": ("ii", "ui"),
}


@dataclass
class QFormerOptions:
    num_queries: int = 8
    cross_attention_every: int = 2
    num_cf_tokens: int = 4
    layers: int | None = None  # None: all layers of the text model
    embed_dim: int = 256
    dropout: float = 0.1


@dataclass
class LossWeights:
    itc: float = 1.0
    itm: float = 1.0
    itg: float = 1.0
    ii: float = 1.0
    ui: float = 1.0


@dataclass
class Stage1Config:
    name: str = "stage1"
    dataset: str = "ml-100k"
    data_home: str | None = None
    split: str = "leave-one-out"
    cf_model: str | None = None  # embeddings folder; None: train MF with `mf` (cached per dataset)
    mf: MFConfig = field(default_factory=MFConfig)
    variant: str = "ilm-it"
    init: str = "bert"  # bert | random
    text_model: str | None = None  # BERT folder or HF id; None: the embedded all-MiniLM-L6-v2
    qformer: QFormerOptions = field(default_factory=QFormerOptions)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    batch_size: int = 32
    max_text_tokens: int = 48
    steps: int = 300
    learning_rate: float = 1e-4
    new_parameter_lr_scale: float = 5.0  # cross-attention, queries, CF encoder and heads learn faster
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # no | bf16
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    output_dir: str | None = None  # default runs/stage1/<name>

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise InputError(f"unknown variant '{self.variant}': expected one of {', '.join(VARIANTS)}")
        if self.init not in ("bert", "random"):
            raise InputError(f"init must be 'bert' or 'random', got '{self.init}'")
        if self.mixed_precision not in ("no", "bf16"):
            raise InputError(f"mixed_precision must be 'no' or 'bf16', got '{self.mixed_precision}'")

    @property
    def out(self) -> Path:
        return Path(self.output_dir or f"runs/stage1/{self.name}")


def build_model(config: Stage1Config, cf: CFEmbeddings) -> ItemQFormer:
    q = config.qformer
    rms = float(np.sqrt(np.mean(np.square(cf.item_vectors))))
    overrides = dict(
        cf_dim=cf.dim, cf_scale=1.0 / max(rms, 1e-8), num_queries=q.num_queries, cross_attention_every=q.cross_attention_every,
        num_cf_tokens=q.num_cf_tokens, embed_dim=q.embed_dim, dropout=q.dropout, init=config.init,
    )
    if q.layers is not None:
        overrides["layers"] = q.layers
    return ItemQFormer.from_bert(config.text_model, **overrides)


def parameter_groups(model: ItemQFormer, config: Stage1Config) -> list[dict]:
    """BERT-initialized weights at the base rate, fresh ones faster; no decay on norms and biases."""
    fresh_prefixes = (
        "cf_proj", "cf_norm", "kind_embedding", "query_tokens", "item_proj", "text_proj", "itm_head", "lm_head", "temp",
    )
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        fresh = config.init == "random" or name.startswith(fresh_prefixes) or ".cross_attn." in name
        decay = parameter.ndim >= 2 and name != "query_tokens"
        groups.setdefault((fresh, decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": config.learning_rate * (config.new_parameter_lr_scale if fresh else 1.0),
            "weight_decay": config.weight_decay if decay else 0.0,
        }
        for (fresh, decay), params in sorted(groups.items())
    ]


def full_precision(like: torch.Tensor):
    """Contrastive similarities divided by a small temperature need float32, even under bf16."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def stage1_loss(model: ItemQFormer, batch: Stage1Batch, config: Stage1Config, generator: torch.Generator):
    """Weighted sum of the variant's losses and a dict of floats for the progress bar and log."""
    w = config.loss_weights
    item_emb = model.item_embeddings(batch.item_cf)
    text_emb = model.text_embeddings(batch.input_ids, batch.attention_mask)
    with full_precision(item_emb):
        itc, itc_info = losses.item_text_contrastive(
            item_emb.float(), text_emb.float(), model.temperature(), batch.item_ids
        )
    itm, itm_info = losses.item_text_matching(
        model, batch.item_cf, None, batch.input_ids, batch.attention_mask,
        itc_info["sim_i2t"], itc_info["sim_t2i"], generator=generator, item_ids=batch.item_ids,
    )
    itg, itg_info = losses.item_grounded_generation(model, batch.item_cf, None, batch.input_ids, batch.attention_mask)
    total = w.itc * itc + w.itm * itm + w.itg * itg
    parts = {"itc": itc, "itm": itm, "itg": itg, "i2t_acc": itc_info["i2t_acc"], "itm_acc": itm_info["itm_acc"]}
    pair_losses = VARIANTS[config.variant]
    if "ii" in pair_losses:
        cf_a, cf_b, ids_a, ids_b = batch.ii
        emb_a, emb_b = model.item_embeddings(cf_a), model.item_embeddings(cf_b)
        with full_precision(emb_a):
            ii, _ = losses.pair_contrastive(
                emb_a.float(), emb_b.float(), model.temperature(), losses.false_negative_mask(ids_a, ids_b)
            )
        total = total + w.ii * ii
        parts["ii"] = ii
    if "ui" in pair_losses:
        user_cf, item_cf, user_ids, item_ids = batch.ui
        kind_user = torch.ones(len(user_cf), dtype=torch.long, device=user_cf.device)
        emb_user, emb_item = model.item_embeddings(user_cf, kind_user), model.item_embeddings(item_cf)
        with full_precision(emb_user):
            ui, _ = losses.pair_contrastive(
                emb_user.float(), emb_item.float(), model.temperature(), losses.false_negative_mask(user_ids, item_ids)
            )
        total = total + w.ui * ui
        parts["ui"] = ui
    parts["loss"] = total
    return total, {k: float(v.detach()) for k, v in parts.items()}


def train_stage1(config: Stage1Config, *, resume: bool = False, stop_after: int | None = None, progress: bool = True) -> Path:
    """Train, checkpoint, evaluate; returns the folder of the final model (out/model).

    `stop_after` ends the run after that many steps as if it were interrupted (used by the
    resume test); the checkpoints on disk are what a later `resume=True` continues from.
    """
    from itemlm.eval.stage1_metrics import evaluate_stage1

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=2))
    # bf16 autocast is applied here rather than through Accelerator(mixed_precision=...): the
    # accelerate state is process-wide, and a second recipe in the same process (stage 1, then
    # stage 2 from Python) could not change it.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16")

    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    cf, _ = load_or_train_mf(split, config.mf, dataset=config.dataset, home=config.data_home, folder=config.cf_model)
    tokenizer = load_tokenizer(config.text_model)
    data = Stage1Data(
        dataset, split, cf.user_vectors, cf.item_vectors, tokenizer,
        batch_size=config.batch_size, max_text_tokens=config.max_text_tokens, seed=config.seed,
        with_item_pairs="ii" in VARIANTS[config.variant], with_user_pairs="ui" in VARIANTS[config.variant],
    )
    model = build_model(config, cf)
    optimizer = torch.optim.AdamW(parameter_groups(model, config))
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    negatives = torch.Generator().manual_seed(config.seed)

    checkpoints = CheckpointManager(out / "checkpoints")
    start_step = 0
    if resume:
        start_step = checkpoints.restore_latest(accelerator.unwrap_model(model), optimizer, scheduler, negatives)
    log = MetricsLog(out / "metrics.jsonl", keep_through_step=start_step)

    model.train()
    last_step = config.steps if stop_after is None else min(config.steps, start_step + stop_after)
    bar = tqdm(range(start_step, last_step), desc=f"stage1 {config.variant}", disable=not progress, initial=start_step, total=config.steps)
    for step in bar:
        batch = data.batch(step).to(accelerator.device)
        with autocast:
            loss, parts = stage1_loss(accelerator.unwrap_model(model), batch, config, negatives)
        if not math.isfinite(parts["loss"]):
            raise RuntimeError(f"stage-1 loss is {parts['loss']} at step {step}; lower the learning rate")
        update_parameters(accelerator, loss, model.parameters(), optimizer, scheduler, config.grad_clip)
        accelerator.unwrap_model(model).clamp_temperature_()
        done = step + 1
        if done % 5 == 0:
            return_freed_memory()
        if done % config.log_every == 0 or done == config.steps:
            record = {"step": done, "lr": scheduler.get_last_lr()[0], **{k: round(v, 5) for k, v in parts.items()}}
            log.write(record)
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items() if k in ("itc", "itm", "itg", "ii", "ui")})
        if done % config.checkpoint_every == 0 and done < config.steps:
            checkpoints.save(done, accelerator.unwrap_model(model), optimizer, scheduler, negatives)
    bar.close()
    log.close()
    if last_step < config.steps:
        checkpoints.save(last_step, accelerator.unwrap_model(model), optimizer, scheduler, negatives)
        return out / "checkpoints"

    final = out / "model"
    trained = accelerator.unwrap_model(model)
    trained.save_pretrained(final, tokenizer=tokenizer)
    metrics = evaluate_stage1(trained.eval(), data)
    metrics["train"] = {
        "variant": config.variant,
        "init": config.init,
        "steps": config.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return final
