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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from itemlm.cf.cache import load_or_train_mf
from itemlm.cf.identity import FILE as CF_RECORD, cf_identity
from itemlm.cf.mf import CFEmbeddings, MFConfig
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.data.stage1_data import Stage1Batch, Stage1Data
from itemlm.errors import InputError
from itemlm.io import atomic_write_text
from itemlm.models import stage1_losses as losses
from itemlm.models.qformer import ItemQFormer, load_tokenizer
from itemlm.train.checkpoint import CheckpointManager, MetricsLog, save_checkpoint
from itemlm.train.distributed import agreed_bfloat16, gather_with_grad, global_mean, local_slice, seed_dropout, start_run
from itemlm.train.memory import return_freed_memory
from itemlm.train.schedule import warmup_cosine
from itemlm.train.update import update_parameters
from itemlm.variants import VARIANTS

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
    mixed_precision: str = "no"  # no | bf16 | auto (bf16 where it is native: GPUs, AVX-512-BF16 CPUs)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    output_dir: str | None = None  # default runs/stage1/<name>

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise InputError(f"unknown variant '{self.variant}': expected one of {', '.join(VARIANTS)}")
        if self.init not in ("bert", "random"):
            raise InputError(f"init must be 'bert' or 'random', got '{self.init}'")
        if self.mixed_precision not in ("no", "bf16", "auto"):
            raise InputError(f"mixed_precision must be 'no', 'bf16' or 'auto', got '{self.mixed_precision}'")

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


class Stage1Objective(nn.Module):
    """The variant's weighted losses as one module: in a distributed run DDP wraps this, so that
    every parameter the losses touch is synchronized by one forward and one backward per step.

    `forward(batch, generator)` takes the whole global batch (every process builds the same one)
    and runs the Q-Former on this process's share; see itemlm.train.distributed for how the
    losses are normalized so that the update does not depend on the number of processes.
    """

    def __init__(self, qformer: ItemQFormer, config: Stage1Config, accelerator: Accelerator):
        super().__init__()
        self.qformer = qformer
        self.weights = config.loss_weights
        self.pair_losses = VARIANTS[config.variant]
        self.accelerator = accelerator

    def forward(self, batch: Stage1Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model, w, accelerator = self.qformer, self.weights, self.accelerator
        world = accelerator.num_processes
        mine = local_slice(len(batch.item_ids), accelerator)
        item_emb = gather_with_grad(model.item_embeddings(batch.item_cf[mine]), accelerator)
        text_emb = gather_with_grad(model.text_embeddings(batch.input_ids[mine], batch.attention_mask[mine]), accelerator)
        with full_precision(item_emb):
            itc, itc_info = losses.item_text_contrastive(item_emb.float(), text_emb.float(), model.temperature(), batch.item_ids)
        itm, itm_info = losses.item_text_matching(
            model, batch.item_cf, None, batch.input_ids, batch.attention_mask, itc_info["sim_i2t"], itc_info["sim_t2i"],
            generator=generator, item_ids=batch.item_ids, share=(accelerator.process_index, world),
        )
        # ITG: this share's token losses over all the batch's tokens (known here: every process has the batch)
        itg_tokens = batch.attention_mask[:, 1:].sum()
        itg, _ = losses.item_grounded_generation(
            model, batch.item_cf[mine], None, batch.input_ids[mine], batch.attention_mask[mine], normalizer=itg_tokens / world,
        )
        total = w.itc * itc + w.itm * itm + w.itg * itg
        parts = {"itc": itc, "itm": itm, "itg": itg, "i2t_acc": itc_info["i2t_acc"], "itm_acc": itm_info["itm_acc"]}
        if "ii" in self.pair_losses:
            cf_a, cf_b, ids_a, ids_b = batch.ii
            parts["ii"] = self.pair_loss(cf_a[mine], cf_b[mine], None, losses.false_negative_mask(ids_a, ids_b, same_space=True))
            total = total + w.ii * parts["ii"]
        if "ui" in self.pair_losses:
            user_cf, item_cf, user_ids, item_ids = batch.ui
            kind_user = torch.ones(mine.stop - mine.start, dtype=torch.long, device=user_cf.device)
            parts["ui"] = self.pair_loss(user_cf[mine], item_cf[mine], kind_user, losses.false_negative_mask(user_ids, item_ids))
            total = total + w.ui * parts["ui"]
        parts["loss"] = total
        return total, parts

    def pair_loss(self, cf_a: torch.Tensor, cf_b: torch.Tensor, kind_a: torch.Tensor | None, false_negatives) -> torch.Tensor:
        """Item-item or user-item contrastive loss over the whole batch's pairs (gathered)."""
        model = self.qformer
        emb_a = gather_with_grad(model.item_embeddings(cf_a, kind_a), self.accelerator)
        emb_b = gather_with_grad(model.item_embeddings(cf_b), self.accelerator)
        with full_precision(emb_a):
            loss, _ = losses.pair_contrastive(emb_a.float(), emb_b.float(), model.temperature(), false_negatives)
        return loss


def train_stage1(
    config: Stage1Config, *, resume: bool = False, overwrite: bool = False, may_change: tuple[str, ...] = (),
    stop_after: int | None = None, progress: bool = True,
) -> Path:
    """Train, checkpoint, evaluate; returns the folder of the final model (out/model).

    `stop_after` ends the run after that many steps as if it were interrupted (used by the
    resume test); the checkpoints on disk are what a later `resume=True` continues from.
    """
    from itemlm.eval.stage1_metrics import evaluate_stage1

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    accelerator = start_run(config, resume=resume, overwrite=overwrite, may_change=may_change)
    main, out = accelerator.is_main_process, config.out
    # bf16 autocast is applied here rather than through Accelerator(mixed_precision=...): the
    # accelerate state is process-wide, and a second recipe in the same process (stage 1, then
    # stage 2 from Python) could not change it.
    use_bf16 = config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and agreed_bfloat16(accelerator))
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    with accelerator.main_process_first():  # process 0 prepares and caches the data and the MF
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
    # the scheduler stays outside accelerate, which would step it once per process
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    objective, optimizer = accelerator.prepare(Stage1Objective(model, config, accelerator), optimizer)
    negatives = torch.Generator().manual_seed(config.seed)

    checkpoints = CheckpointManager(out / "checkpoints")
    start_step = 0
    if resume:
        start_step = checkpoints.restore_latest(model, optimizer, scheduler, negatives, accelerator.process_index, accelerator.num_processes)
    if not checkpoints.restored_process_rng:  # a fresh run, or one resumed under another world size
        seed_dropout(config.seed, start_step, accelerator)
    log = MetricsLog(out / "metrics.jsonl", keep_through_step=start_step) if main else None

    model.train()
    last_step = config.steps if stop_after is None else min(config.steps, start_step + stop_after)
    bar = tqdm(range(start_step, last_step), desc=f"stage1 {config.variant}", disable=not (progress and main), initial=start_step, total=config.steps)
    for step in bar:
        batch = data.batch(step).to(accelerator.device)
        with autocast:
            loss, parts = objective(batch, negatives)
        update_parameters(accelerator, loss, model.parameters(), optimizer, scheduler, config.grad_clip)
        model.clamp_temperature_()
        done = step + 1
        if done % 5 == 0:
            return_freed_memory()
        logging = done % config.log_every == 0 or done == config.steps
        # the last step is saved too: a crash in saving or evaluation never trains again
        saving = done % config.checkpoint_every == 0 or done == config.steps
        if logging or saving:
            values = {k: float(global_mean(v, accelerator)) for k, v in parts.items()}
            if not math.isfinite(values["loss"]):
                raise RuntimeError(f"stage-1 loss is {values['loss']} at step {done}; lower the learning rate")
        if logging:
            if main:
                log.write({"step": done, "lr": scheduler.get_last_lr()[0], **{k: round(v, 5) for k, v in values.items()}})
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k in ("itc", "itm", "itg", "ii", "ui")})
        if saving:
            save_checkpoint(accelerator, checkpoints, done, model, optimizer, scheduler, negatives)
    bar.close()
    if log is not None:
        log.close()
    if last_step < config.steps:
        save_checkpoint(accelerator, checkpoints, last_step, model, optimizer, scheduler, negatives)
        return out / "checkpoints"
    accelerator.wait_for_everyone()
    if not main:  # process 0 saves and evaluates
        return out / "model"

    final = out / "model"
    model.save_pretrained(final, tokenizer=tokenizer, records={CF_RECORD: cf_identity(cf)})  # stage 2 must feed it the same vectors
    metrics = evaluate_stage1(model.eval(), data)
    metrics["train"] = {
        "variant": config.variant,
        "init": config.init,
        "steps": config.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return final
