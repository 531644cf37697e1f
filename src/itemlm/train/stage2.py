"""Stage-2 recipe: plug a bridge into a frozen LLM and fine-tune the bridge on many tasks at once.

Read it top to bottom: config -> data, CF vectors, samples -> LLM + bridge -> loop -> save -> eval.

    itemlm stage2 --config stage2-quick stage1_model=runs/stage1/stage1-quick/model
    itemlm stage2 --config stage2-quick bridge=mlp
    itemlm stage2 --config stage2-quick --resume

Bridges: ilm (the stage-1 Q-Former + a linear adapter), ilm-rand (a randomly initialized
Q-Former of the same size), mlp (CoLLM-style), text-only (nothing to train: the plain LLM reading
titles). Only the bridge's parameters get gradients; the LLM is frozen (tests/test_llm.py).
"""

from __future__ import annotations

import gc
import json
import math
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from itemlm.cf.cache import load_or_train_mf
from itemlm.cf.identity import check_same_cf
from itemlm.cf.mf import MFConfig
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.eval.curves import plot_learning_curves, read_curve
from itemlm.eval.validation import ValidationProbe
from itemlm.errors import FieldError, InputError
from itemlm.io import atomic_write_text, folder_digest
from itemlm.models.bridges import ADAPTERS, MLPBridge, QFormerBridge, count_parameters, freeze_unused
from itemlm.models.catalogue import Catalogue
from itemlm.models.ilm import ItemLanguageModel
from itemlm.models.llm import FrozenLLM
from itemlm.models.precision import DTYPES
from itemlm.models.qformer import ItemQFormer
from itemlm.rank.evaluate import evaluation_users, ranking_report
from itemlm.rank.ranker import Ranker, RankingConfig
from itemlm.rank.retriever import load_or_train_retriever
from itemlm.rank.samples import position_samples, ranking_samples
from itemlm.tasks.build import build_samples
from itemlm.tasks.facts import ItemFacts
from itemlm.tasks.curriculum import check_curriculum, check_task_weights, phase_start, phase_value, schedule_batches
from itemlm.tasks.sample import group_by_task
from itemlm.tasks.templates import EXTRA_TASKS, PROMPT_SETS, TASKS, TRAINING_TASKS, infer_domain
from itemlm.train.checkpoint import CheckpointManager, MetricsLog, save_checkpoint
from itemlm.train.distributed import agreed_bfloat16, global_mean, global_sum, local_rows, seed_dropout, start_run
from itemlm.train.memory import return_freed_memory
from itemlm.train.schedule import warmup_cosine
from itemlm.train.unknown_titles import UnknownTitlesConfig, train_unknown_titles
from itemlm.train.update import update_parameters
from itemlm.train.warm_start import TitleAnchor, WarmStartConfig, profile_targets, tag_accuracy, title_targets, warm_start_bridge
from itemlm.variants import BRIDGES

DEFAULT_WEIGHTS = {
    "item_title": 1.0, "item_genres": 1.0, "item_description": 1.0, "item_pitch": 1.0,
    "user_profile": 1.0, "sequential": 2.0, "straightforward": 1.0, "conversational": 1.0,
}


@dataclass
class Stage2Config:
    name: str = "stage2"
    dataset: str = "ml-100k"
    data_home: str | None = None
    split: str = "leave-one-out"
    cf_model: str | None = None  # None: the MF of `mf`, trained once per dataset and cached
    mf: MFConfig = field(default_factory=MFConfig)
    bridge: str = "ilm"  # ilm | ilm-rand | mlp | text-only
    stage1_model: str | None = None  # the stage-1 Q-Former folder (bridge=ilm)
    random_qformer_layers: int = 2  # size of the ilm-rand Q-Former (MiniLM config, random weights)
    num_queries: int = 8  # ilm-rand only; ilm takes it from the stage-1 model
    qformer_adapter: str = "shared"  # ilm / ilm-rand: shared (the paper's) | all-query (itemlm.models.bridges.ADAPTERS)
    qformer_dropout: float | None = None  # dropout inside the Q-Former in stage 2; None: the stage-1 model's (0.1)
    freeze_qformer: bool = False  # only the adapter trains: the Q-Former stays as stage 1 (or its random init) left it
    mlp_tokens: int = 1  # CoLLM uses one token per item
    mlp_hidden: int = 0  # the MLP's hidden width; 0: four times the LLM's
    llm: str | None = None  # HF id, folder or .gguf; None: the embedded SmolLM2-135M-Instruct
    llm_dtype: str = "auto"  # auto: bfloat16 where it is faster (GPU; CPU: measured, precision.fast_bfloat16), else float32; evaluation reloads in eval_dtype
    eval_dtype: str = "float32"
    # speed switches (None: on where CUDA is, off on the CPU)
    compile: bool | None = None  # torch.compile the frozen LLM's layers (forward and backward) and the bridge
    attention: str | None = None  # sdpa | flash_attention_2 | eager; None: the model's default (SDPA)
    pad_to_multiple: int | None = None  # pad batches to a multiple of this length; None: 64 when compiling, else 1
    ce_chunk_rows: int = 4096  # label positions per LM-head + cross-entropy chunk
    pin_memory: bool = True  # batches reach a GPU through pinned host memory
    shard_llm: bool = False  # distributed runs: shard the LLM's decoder layers over the processes (FSDP2)
    system_prompt: str | None = ""  # "": an empty system message (SmolLM2's default costs ~20 tokens a row); None: the template's default
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    unknown_titles: UnknownTitlesConfig = field(default_factory=UnknownTitlesConfig)  # after training: what to read for items never read about
    ranking: RankingConfig = field(default_factory=RankingConfig)  # ranking mode: retriever + LLM over candidates (itemlm.rank)
    task_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    curriculum: list = field(default_factory=list)  # phases {steps, task_weights} over the first steps (itemlm.tasks.curriculum)
    bucket_by_length: bool = True  # batches of rows of similar length (less padding)
    history_length: int = 20
    max_target_tokens: int = 48
    batch_size: int = 8  # the global batch: split over processes in a distributed run
    steps: int = 200
    learning_rate: float = 1e-4
    adapter_lr_scale: float = 10.0  # the adapter / MLP start from scratch
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # the cosine decay ends at this fraction of the peak rate (1.0: constant after warmup)
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    validate_every: int = 0  # steps between validation probes (learning curves); 0: none
    validation_names: int = 50  # item_title probes per group (text-seen, text-held-out)
    validation_sc: int = 16  # description (or pitch) probes for SC
    checkpoint_every: int = 50
    eval_text_samples: int = 40  # per text task and prompt set
    eval_rec_samples: int = 100  # users per ranked task and prompt set
    eval_beams: int = 10
    # trie generation: weight of the items' training popularity beside the LLM's log-probability,
    # saved with the model (0: the LLM alone, the paper's protocol; docs/benchmarks.md, "A popularity prior")
    popularity_prior: float = 0.0
    # trie generation: weight of ranking mode's retriever, read on each prompt's item history, beside the
    # LLM's log-probability (0: none; needs ranking.enabled; docs/benchmarks.md, "A retriever prior")
    retriever_prior: float = 0.0
    eval_rank_users: int = 0  # ranking mode: test users scored (0: all of them)
    eval_seed: int = 0  # which test examples are scored: the same for every model, whatever its seed
    eval_consensus: int = 0  # free answers in the evaluation: 0 greedy (every bench cell), n > 0 the consensus of greedy + n samples (models/consensus.py)
    eval_prompts: str = "all"  # every subject in a training phrasing and in the held-out one; "seen": the former only (half the time)
    sc_encoder: str | None = None  # sentence-transformers name or folder for SC; None: the packaged MiniLM
    output_dir: str | None = None  # default runs/stage2/<name>

    def __post_init__(self):
        if self.bridge not in BRIDGES:
            raise FieldError("bridge", f"must be one of {', '.join(BRIDGES)}, got '{self.bridge}'")
        check_task_weights(self.task_weights, "task_weights")
        check_curriculum(self.curriculum, self.steps)
        for dtype_field in ("llm_dtype", "eval_dtype"):
            if getattr(self, dtype_field) not in ("auto", *DTYPES):
                raise FieldError(dtype_field, f"must be one of auto, {', '.join(DTYPES)}, got '{getattr(self, dtype_field)}'")
        if not 0 <= self.min_lr_ratio <= 1:
            raise FieldError("min_lr_ratio", f"must be between 0 and 1, got {self.min_lr_ratio}")
        if self.qformer_adapter not in ADAPTERS:
            raise FieldError("qformer_adapter", f"must be one of {', '.join(ADAPTERS)}, got '{self.qformer_adapter}'")
        if self.qformer_dropout is not None and not 0 <= self.qformer_dropout < 1:
            raise FieldError("qformer_dropout", f"must be at least 0 and below 1, got {self.qformer_dropout}")
        if self.eval_prompts not in PROMPT_SETS:
            raise FieldError("eval_prompts", f"must be one of {', '.join(PROMPT_SETS)}, got '{self.eval_prompts}'")
        for prior in ("popularity_prior", "retriever_prior"):
            if not getattr(self, prior) >= 0 or not math.isfinite(getattr(self, prior)):
                raise FieldError(prior, f"must be a number >= 0, got {getattr(self, prior)}")
        if self.retriever_prior and not self.ranking.enabled:
            raise FieldError("retriever_prior", "needs ranking.enabled=true (the prior is ranking mode's retriever)")
        if self.bridge == "ilm" and not self.stage1_model:
            raise InputError("bridge=ilm needs stage1_model=<folder of a stage-1 model> (run `itemlm stage1` first)")

    @property
    def out(self) -> Path:
        return Path(self.output_dir or f"runs/stage2/{self.name}")


def weighed(config: Stage2Config, task: str) -> bool:
    """Whether the mixture or a curriculum phase gives `task` a weight above 0."""
    weights = [config.task_weights, *(phase.get("task_weights") or {} for phase in config.curriculum)]
    return any(w.get(task, 0) > 0 for w in weights)


def sample_tasks(config: Stage2Config) -> list[str]:
    """The templated tasks a run builds samples of, for training and for its evaluation: the paper's
    eight always, and an extra task (`EXTRA_TASKS`) only when it is weighed, so that runs without it
    train and evaluate exactly as before."""
    return [*TASKS, *(task for task in EXTRA_TASKS if weighed(config, task))]


def cf_input_scale(item_vectors: np.ndarray) -> float:
    """What the bridge multiplies CF vectors by: 1 / their root mean square (MF coordinates are small)."""
    return 1.0 / max(float(np.sqrt(np.mean(np.square(item_vectors)))), 1e-8)


def embedding_scale(llm: FrozenLLM) -> float:
    """Per-coordinate size of the LLM's own token embeddings: new vectors should start like them."""
    weight = llm.model.get_input_embeddings().weight.float()
    return float(weight.norm(dim=1).mean() / math.sqrt(weight.shape[1]))


def stage2_qformer(config: Stage2Config, cf_dim: int, cf_scale: float) -> ItemQFormer:
    """The Q-Former an ilm bridge reads (stage 1's) or an ilm-rand bridge starts from (random), with
    stage 2's dropout and freezing applied."""
    if config.bridge == "ilm":
        qformer = ItemQFormer.from_pretrained(config.stage1_model)
        if qformer.config.cf_dim != cf_dim:
            raise InputError(f"the stage-1 model reads {qformer.config.cf_dim}-d CF vectors, these are {cf_dim}-d", path=config.stage1_model)
    else:
        qformer = ItemQFormer.from_bert(
            None, init="random", layers=config.random_qformer_layers, num_queries=config.num_queries, cf_dim=cf_dim, cf_scale=cf_scale,
        )
    if config.qformer_dropout is not None:
        qformer.set_dropout(config.qformer_dropout)
    if config.freeze_qformer:
        qformer.requires_grad_(False)
    return qformer


def build_bridge(config: Stage2Config, cf_dim: int, cf_scale: float, llm: FrozenLLM):
    scale = embedding_scale(llm)
    if config.bridge == "text-only":
        return None
    if config.bridge in ("ilm", "ilm-rand"):
        return QFormerBridge(stage2_qformer(config, cf_dim, cf_scale), llm.hidden_size, scale, config.qformer_adapter)
    return MLPBridge(cf_dim, llm.hidden_size, config.mlp_tokens, hidden=config.mlp_hidden or None, cf_scale=cf_scale, output_scale=scale)


def parameter_groups(bridge, config: Stage2Config) -> list[dict]:
    fresh, pretrained = [], []
    for name, parameter in bridge.named_parameters():
        if not parameter.requires_grad:
            continue
        (pretrained if name.startswith("qformer.") else fresh).append(parameter)
    groups = [{"params": fresh, "lr": config.learning_rate * config.adapter_lr_scale}]
    if pretrained:
        groups.append({"params": pretrained, "lr": config.learning_rate})
    return [dict(g, weight_decay=config.weight_decay) for g in groups]


def make_optimizer(bridge, config: Stage2Config, ranker: Ranker | None = None) -> torch.optim.AdamW:
    """AdamW over the bridge's trainable parameters (and the ranking head's): on a GPU the fused
    kernel (one launch for all of them), on the CPU the multi-tensor one (PyTorch's CPU default
    loops per tensor)."""
    on_gpu = next(bridge.parameters()).device.type == "cuda"
    groups = parameter_groups(bridge, config)
    if ranker is not None:
        groups.append({"params": list(ranker.head.parameters()), "lr": config.ranking.head_learning_rate, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, fused=on_gpu, foreach=not on_gpu)


def load_everything(config: Stage2Config, llm_dtype: str):
    """Dataset, split, CF vectors, LLM and the catalogue the model will carry."""
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    cf, _ = load_or_train_mf(split, config.mf, dataset=config.dataset, home=config.data_home, folder=config.cf_model)
    if config.bridge == "ilm":  # the pre-trained Q-Former reads only the vectors it was pre-trained on
        check_same_cf(config.stage1_model, cf)
    llm = FrozenLLM.load(config.llm, dtype=llm_dtype, attention=config.attention)
    catalogue = Catalogue(
        dataset.items, [s.tolist() for s in split.train_sequences()], cf.item_vectors, cf.user_vectors, infer_domain(dataset)
    )
    return dataset, split, cf, llm, catalogue


def speed_path(config: Stage2Config, model: ItemLanguageModel, device: torch.device) -> int:
    """Apply the speed switches to the model; returns the length batches are padded to a multiple of."""
    on_gpu = device.type == "cuda"
    compile_llm = on_gpu if config.compile is None else config.compile
    model.llm.ce_chunk_rows = config.ce_chunk_rows
    model.pin_memory = config.pin_memory
    if compile_llm:
        model.llm.compile()
        if model.bridge is not None:  # the Q-Former's many small kernels, fused
            model.bridge.compile()
    if config.pad_to_multiple is not None:
        return max(1, config.pad_to_multiple)
    return 64 if compile_llm else 1


def training_step(
    model: ItemLanguageModel, rows: list, config: Stage2Config, accelerator, optimizer, scheduler,
    pad_to_multiple: int = 1, anchor: TitleAnchor | None = None, step: int = 0, anchor_weight: float | None = None,
    anchor_targets: str = "titles",
):
    """One update on this process's rows of a global batch; returns the (detached) LM loss, the
    number of label tokens, the (detached) ranking loss, NaN without ranking rows, and whether the
    whole loss (LM, anchor and ranking) was finite. Nothing in
    it waits for the device: the batch is laid out on the host while the device still works on
    the previous step. With an `anchor`, the warm start's title regression on a batch of items
    joins the loss (no LLM forward: it is cheap). Ranking rows (ranking mode) add their
    cross-entropy over candidates, weighted by their share of rows."""
    ranked = [s for s in rows if s.task == "ranking"]
    rows = [s for s in rows if s.task != "ranking"]
    loss, tokens = torch.zeros((), device=model.llm.device), 0
    if rows:
        batch = model.collate([s.prompt for s in rows], [s.target for s in rows], config.max_target_tokens, pad_to_multiple=pad_to_multiple)
        loss_sum, tokens = model.loss_on(batch, reduction="sum")
        # the sum over this share / all label tokens of the global batch, times the world size:
        # DDP's gradient average then equals the one-process gradient of the global mean
        everyone = global_sum(tokens, accelerator)
        everyone = everyone.clamp(min=1) if isinstance(everyone, torch.Tensor) else max(1, everyone)
        loss = loss_sum * (accelerator.num_processes / everyone)
    total, ranking_loss = loss, torch.full((), float("nan"), device=model.llm.device)
    if anchor is not None and anchor_weight != 0:  # None: the configured weight; a phase may set its own
        total = total + anchor.loss(accelerator.unwrap_model(model.bridge), step, anchor_weight, anchor_targets)
    if ranked:
        scores = torch.tensor([s.candidate_scores for s in ranked])
        answers = torch.tensor([s.candidates.index(s.target_item) for s in ranked])
        share = len(ranked) / (len(ranked) + len(rows))
        ranking_loss = model.ranker.loss(model, [s.prompt for s in ranked], scores, answers)
        total = total + share * ranking_loss
    update_parameters(accelerator, total, model.bridge.parameters(), optimizer, scheduler, config.grad_clip)
    return loss.detach(), tokens, ranking_loss.detach(), torch.isfinite(total.detach())


def row_length(model: ItemLanguageModel, config: Stage2Config):
    """A cheap length estimate of a training row (for batching rows of similar length)."""
    vectors = max(1, model.num_vectors())

    def length(sample) -> int:
        slots = sample.prompt.count("<item:") + sample.prompt.count("<user:")
        return slots * (1 if sample.task == "ranking" else vectors) + (len(sample.prompt) + min(len(sample.target), 4 * config.max_target_tokens)) // 4

    return length


def text_seen_items(dataset) -> np.ndarray:
    return np.flatnonzero(~dataset.items["text_held_out"].to_numpy(dtype=bool))


def train_stage2(
    config: Stage2Config, *, resume: bool = False, overwrite: bool = False, may_change: tuple[str, ...] = (),
    stop_after: int | None = None, progress: bool = True, evaluate: bool = True,
) -> Path:
    """Train the bridge, checkpoint, save `out/model`, evaluate; returns the model folder.

    Runs as one process or as several (`torchrun` / `accelerate launch`, see
    itemlm.train.distributed): each process takes its share of every global batch, process 0
    writes everything. `stop_after` ends the run after that many steps as if interrupted.
    """
    from itemlm.eval.stage2_eval import PartialResult, evaluate_stage2

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    accelerator = start_run(config, resume=resume, overwrite=overwrite, may_change=may_change)
    main, out = accelerator.is_main_process, config.out

    llm_dtype = config.llm_dtype
    if llm_dtype == "auto":  # one answer for every process (a timing on a CPU)
        llm_dtype = "bfloat16" if agreed_bfloat16(accelerator) else "float32"
    with accelerator.main_process_first():  # process 0 prepares and caches data, MF, converted LLM
        dataset, split, cf, llm, catalogue = load_everything(config, llm_dtype)
    if config.shard_llm and accelerator.num_processes > 1:
        llm.shard()
    llm.to(accelerator.device)
    cf_scale = cf_input_scale(cf.item_vectors)
    bridge = build_bridge(config, cf.dim, cf_scale, llm)
    llm.system_prompt = config.system_prompt
    model = ItemLanguageModel(llm, bridge, config.bridge, catalogue)
    pad_to_multiple = speed_path(config, model, accelerator.device)
    tasks = sample_tasks(config)
    train_samples = build_samples(dataset, split, "train", tasks=tasks, seed=config.seed, history_length=config.history_length, prompts="seen")
    steps = config.steps if bridge is not None else 0  # text-only has nothing to train
    samples_by_task = group_by_task(train_samples)
    ranker = None
    if config.ranking.enabled:
        if accelerator.num_processes > 1:
            raise InputError("ranking mode trains in one process for now: run without torchrun, or set ranking.enabled=false")
        with torch.random.fork_rng(devices=[]):  # trained or read from the cache, the retriever leaves the run's random stream as it was
            retriever = load_or_train_retriever(
                split, config.ranking.retriever, dataset=config.dataset, home=config.data_home, item_vectors=cf.item_vectors,
                seed=config.seed, progress=progress and main,
            )
        ranker = model.ranker = Ranker(retriever, config.ranking).to(accelerator.device)
        validation_rows = ranking_samples(split, retriever, "valid", config.ranking, catalogue.domain, only_hits=True)
        # with calibration the validation rows are kept from the bridge: they fit the head afterwards
        samples_by_task["ranking"] = ([] if config.ranking.calibrate else validation_rows) + (
            position_samples(split, retriever, config.ranking, catalogue.domain) if config.ranking.train_positions else [])
        if not samples_by_task["ranking"]:
            del samples_by_task["ranking"]
    batches = schedule_batches(
        samples_by_task, config.curriculum if steps else [], config.task_weights, steps, config.batch_size,
        seed=config.seed, length=row_length(model, config) if config.bucket_by_length else None,
    )

    checkpoints = CheckpointManager(out / "checkpoints")
    start_step, clock = 0, 0.0  # clock: training seconds so far (warm start included, validation not)
    log, anchor, warm_report, probe = None, None, None, None
    if bridge is not None:
        bridge.to(accelerator.device)
        freeze_unused(bridge, cf.dim)
        warm = config.warm_start
        anchor_wanted = bool(warm.anchor_weight or any(p.get("anchor_weight") for p in config.curriculum))
        if warm.enabled or anchor_wanted:
            facts = ItemFacts.from_dataset(dataset, catalogue.domain) if warm.tag_tokens else None  # tags only when asked for
            targets = title_targets(llm, text_seen_items(dataset), catalogue.titles, bridge.num_tokens,
                                    tags=facts and facts.tags, tag_tokens=warm.tag_tokens)
        if warm.enabled and not (resume and checkpoints.latest() is not None):
            profiles = {s.user: s.target for s in samples_by_task.get("user_profile", [])}  # one text per user, whatever the phrasing
            users = (cf.user_vectors, profile_targets(llm, profiles, bridge.num_tokens)) if warm.users and profiles else None
            warm_report = warm_start_bridge(
                bridge, cf.item_vectors, targets, warm, seed=config.seed, progress=progress and main, users=users,
            )
            clock += warm_report["seconds"]
            if facts is not None and facts.held_out.any():
                warm_report["held_out_tag_accuracy"] = round(tag_accuracy(
                    llm, bridge, cf.item_vectors, np.flatnonzero(facts.held_out), facts.tags, warm.tag_tokens), 4)
        if anchor_wanted:
            anchor = TitleAnchor(targets, cf.item_vectors, warm, accelerator.device, config.seed)
        optimizer = make_optimizer(bridge, config, ranker)
        # the scheduler stays outside accelerate, which would step it once per process
        scheduler = warmup_cosine(optimizer, config.warmup_steps, steps, floor=config.min_lr_ratio,
                                  scale=lambda step: phase_value(config.curriculum, step, "lr_scale", 1.0))
        bridge, optimizer = accelerator.prepare(bridge, optimizer)
        model.bridge = bridge
        # what a checkpoint holds: the bridge, and the ranking head when ranking mode trains
        trained_parts = bridge if ranker is None else nn.ModuleDict({"bridge": accelerator.unwrap_model(bridge), "ranking_head": ranker.head})
        generator = torch.Generator().manual_seed(config.seed)
        if resume:
            start_step = checkpoints.restore_latest(
                accelerator.unwrap_model(trained_parts), optimizer, scheduler, generator, accelerator.process_index, accelerator.num_processes,
            )
        if not checkpoints.restored_process_rng:  # a fresh run, or one resumed under another world size
            seed_dropout(config.seed, start_step, accelerator)
        if main:
            log = MetricsLog(out / "metrics.jsonl", keep_through_step=start_step)
            clock = max(clock, log.last("train_seconds", 0.0))
            if warm_report is not None:
                log.write({"step": 0, "warm_start": warm_report, "train_seconds": round(clock, 1)})
            else:  # a resumed run: the warm start's report, as its first session logged it
                warm_report = log.last("warm_start")
        if config.validate_every and main:
            probe = ValidationProbe.build(
                dataset, split, names_per_group=config.validation_names, sc_samples=config.validation_sc,
                history_length=config.history_length, seed=config.eval_seed, max_new_tokens=config.max_target_tokens,
            )
        model.train()

    def validate(step: int) -> None:
        """Learning-curve point: the validation probe against training seconds (process 0 only)."""
        if probe is None:
            return
        began = time.perf_counter()
        values = probe.run(model, encoder=config.sc_encoder)
        log.write({"step": step, "train_seconds": round(clock, 1), "validation": values, "validation_seconds": round(time.perf_counter() - began, 1)})
        bar.write(f"step {step}: " + ", ".join(f"{k} {v}" for k, v in values.items()))

    last_step = steps if stop_after is None else min(steps, start_step + stop_after)
    bar = tqdm(range(start_step, last_step), desc=f"stage2 {config.bridge}", disable=not (progress and main), initial=start_step, total=steps)
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    if start_step == 0 and steps:
        validate(0)
    logged_step, logged_at = start_step, time.perf_counter()  # training speed between log lines
    step_started = time.perf_counter()
    for step in bar:
        rows = local_rows(batches[step], accelerator)
        anchor_weight, anchor_targets = None, "titles"
        if anchor is not None:
            anchor_weight = phase_value(config.curriculum, step, "anchor_weight", warm.anchor_weight)
            anchor_targets = phase_value(config.curriculum, step, "anchor_targets", None) or "titles"
            if anchor_targets == "current":  # the bridge as this phase found it (saved: a resumed run reads it back)
                anchor.hold_current(accelerator.unwrap_model(bridge), phase_start(config.curriculum, step),
                                    out / "anchor_targets.safetensors", write=main)
        loss, tokens, ranking_loss, finite = training_step(model, rows, config, accelerator, optimizer, scheduler, pad_to_multiple,
                                                           anchor, step, anchor_weight, anchor_targets)
        nonfinite |= ~finite
        done = step + 1
        if done % 5 == 0:
            return_freed_memory()
        logging = done % config.log_every == 0 or done == steps
        # the last step is saved too: a crash in saving or evaluation never trains again
        saving = done % config.checkpoint_every == 0 or done == steps
        # the same on every process (the probe runs on process 0 alone), since the check below is a collective
        validating = bool(config.validate_every) and (done % config.validate_every == 0 or done == last_step)
        if logging or saving or validating:  # the only points where the host waits for the device
            if bool(global_sum(nonfinite, accelerator)):
                raise RuntimeError(f"stage-2 loss became NaN or infinite by step {done}; lower the learning rate")
            now = time.perf_counter()
            clock += now - step_started
            step_started = now
        if logging:
            value, total_tokens = float(global_mean(loss, accelerator)), int(global_sum(tokens, accelerator))
            now = time.perf_counter()
            speed = sum(len(b) for b in batches[logged_step:done]) / (now - logged_at)
            logged_step, logged_at = done, now
            # a ranking-only step has no label tokens: its LM loss is 0 and the ranking loss is the one to watch
            shown = {"loss": round(value, 5)} if total_tokens else {}
            if ranker is not None and math.isfinite(rank_value := float(ranking_loss)):
                shown["ranking_loss"] = round(rank_value, 5)
            if main:
                log.write({"step": done, **shown, "tokens": total_tokens, "lr": scheduler.get_last_lr()[0],
                           "samples_per_s": round(speed, 2), "train_seconds": round(clock, 1)})
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
        if validating:
            began = time.perf_counter()
            validate(done)
            paused = time.perf_counter() - began
            logged_at += paused  # validation time is not training time: neither the clock nor the speed counts it
            step_started += paused
        if saving:
            save_checkpoint(accelerator, checkpoints, done, trained_parts, optimizer, scheduler, generator)
    bar.close()
    if log is not None:
        log.close()
    if last_step < steps:
        save_checkpoint(accelerator, checkpoints, last_step, trained_parts, optimizer, scheduler, generator)
        return out / "checkpoints"
    accelerator.wait_for_everyone()
    if not main:  # process 0 saves and evaluates
        return out / "model"

    trained = accelerator.unwrap_model(bridge) if bridge is not None else None
    model.bridge = trained
    calibration, unknown_report = None, None
    if trained is not None and config.unknown_titles.steps:  # before calibration: ranking prompts read them too
        unknown_report = train_unknown_titles(
            model, samples_by_task, config.unknown_titles, trained.num_tokens - config.warm_start.tag_tokens, seed=config.seed,
            max_target_tokens=config.max_target_tokens, progress=progress,
        )
        clock += unknown_report["seconds"]
    if ranker is not None and config.ranking.calibrate:  # the head fitted on rows the bridge never read
        if trained is not None:
            trained.eval()
        calibration = ranker.calibrate(model, validation_rows)
    meta = {
        "dataset": config.dataset,
        "cf_dim": cf.dim,
        "cf_scale": cf_scale,
        "num_tokens": getattr(trained, "num_tokens", 0),
        "mlp_hidden": trained.mlp[0].out_features if isinstance(trained, MLPBridge) else None,
        "adapter": trained.adapter_kind if isinstance(trained, QFormerBridge) else None,
        "trainable_parameters": count_parameters(trained),
        "system_prompt": config.system_prompt,
        "popularity_prior": config.popularity_prior,
        "retriever_prior": config.retriever_prior,
        "tasks": [task for task in TRAINING_TASKS if task in samples_by_task and weighed(config, task)],
    }
    final = model.save_pretrained(out / "model", meta)
    train_seconds = time.perf_counter() - started
    report = {"train": {"bridge": config.bridge, "steps": steps, "samples": sum(len(b) for b in batches), "seconds": round(train_seconds, 1),
                        "train_seconds": round(clock, 1), "llm_bfloat16": llm.dtype == torch.bfloat16, **meta}}
    if warm_report is not None:
        report["warm_start"] = warm_report
    if calibration is not None:
        report["ranking_calibration"] = calibration
    if unknown_report is not None:
        report["unknown_titles"] = unknown_report
    if probe is not None:
        plot_learning_curves({config.name: read_curve(out / "metrics.jsonl")}, out / "curves.png")
    if evaluate:
        # The training copy of the LLM (often bfloat16) goes before the evaluation copy loads.
        del model, trained, bridge, llm
        gc.collect()
        return_freed_memory()
        eval_model = ItemLanguageModel.from_pretrained(final, dtype=config.eval_dtype)
        # finished parts of an interrupted evaluation of these very weights are read back, not redone
        parts, fingerprint = out / "evaluation-parts", folder_digest(final)
        test_samples = build_samples(dataset, split, "test", tasks=tasks, seed=config.eval_seed, history_length=config.history_length,
                                     prompts=config.eval_prompts)
        eval_model.consensus = config.eval_consensus
        report["test"], per_example = evaluate_stage2(
            eval_model, test_samples, max_text_samples=config.eval_text_samples, max_rec_samples=config.eval_rec_samples,
            num_beams=config.eval_beams, max_new_tokens=config.max_target_tokens, seed=config.eval_seed,
            encoder=config.sc_encoder, progress=progress, resume_dir=parts, model_fingerprint=fingerprint,
        )
        if eval_model.ranker is not None:
            users = evaluation_users(split, "test", config.eval_rank_users, config.eval_seed)
            part = PartialResult(parts, "ranking_mode", {"model": fingerprint, "users": None if users is None else users.tolist()})
            report["test"]["ranking_mode"], per_example["ranking_mode"] = part.read_or(
                lambda: ranking_report(eval_model, split, "test", users=users, progress=progress))
        atomic_write_text(out / "per_example.json", json.dumps(per_example))
        report["eval_seconds"] = round(time.perf_counter() - started - train_seconds, 1)
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2))
    if evaluate:
        shutil.rmtree(parts, ignore_errors=True)  # the report now holds them all
    return final
