"""Stage-2 speed: the full ILM training step next to the bare frozen-LLM soft-prompt step of the same shape.

For random-initialized LLMs of real shapes (speed does not depend on the weights), every row of
the same batch: `prefix` input vectors standing for items, then text tokens; labels on the
answer tokens only. All steps do forward + backward through the frozen LLM and an AdamW update.

    hf-eager       the bare step through Hugging Face's own forward and loss (logits at every position)
    bare-eager     the bare step through itemlm's forward: LM head + cross-entropy only at labelled
                   positions, in chunks; the prefix vectors are one trainable tensor
    ilm-eager      the recipe's step (itemlm.train.stage2.training_step): host-side layout of the
                   prompts, Q-Former + adapter for 4 items x 8 queries per row, the same LLM step
    bare-compiled, ilm-compiled   the same two with the decoder layers under torch.compile

Reported per row: samples/s, tokens/s, model TFLOP/s (4 x matmul parameters x tokens: forward
and the backward to the activations of a frozen LLM; the LM head counted on labelled tokens
only) and peak memory. Targets: ilm-compiled >= 90% of bare-compiled samples/s, and its peak
memory at most bare-compiled's + 2 GB.

    python benchmarks/stage2_throughput.py                                   # CPU: SmolLM2 shape, batch 8
    python benchmarks/stage2_throughput.py --shapes smollm2-135m qwen2.5-0.5b qwen2.5-1.5b --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from itemlm.config import load_config
from itemlm.models.bridges import QFormerBridge, freeze_unused
from itemlm.models.catalogue import Catalogue
from itemlm.models.ilm import ItemLanguageModel
from itemlm.models.llm import FrozenLLM
from itemlm.models.qformer import ItemQFormer
from itemlm.tasks.sample import Sample
from itemlm.train.distributed import make_accelerator
from itemlm.train.schedule import warmup_cosine
from itemlm.train.stage2 import (
    Stage2Config,
    embedding_scale,
    make_optimizer,
    training_step,
)

# Published architecture numbers of the three LLMs (config.json of each); weights are random.
SHAPES = {
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0)),
    "qwen2.5-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                   num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0)),
    "qwen2.5-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                   num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0)),
}
ITEMS_PER_ROW = 4
QUERIES = 8
CF_DIM = 64


def random_llm(shape: str, tokenizer_folder: Path, dtype: torch.dtype, device: torch.device, attention: str) -> FrozenLLM:
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    arch, numbers = SHAPES[shape]
    config_class, model_class = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))  # SmolLM2's: ids fit every vocabulary here
    config = config_class(**numbers, tie_word_embeddings=True, max_position_embeddings=4096, attn_implementation=attention,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(config).to(dtype)
    return FrozenLLM(model, tokenizer, source=f"random {shape}")


def synthetic_rows(model: ItemLanguageModel, batch: int, text_tokens: int, seed: int) -> tuple[list[Sample], int]:
    """`batch` prompts naming 4 items each (4 x 8 = 32 prefix vectors) whose text, template and
    answer together take exactly `text_tokens` tokens; returns them and the answer length."""
    rng = np.random.default_rng(seed)
    words = "the a film story about love war space music family city night friends journey".split()
    rows = []
    for _ in range(batch):
        items = rng.choice(model.catalogue.num_items, ITEMS_PER_ROW, replace=False)
        prompt = "Watched " + ", ".join(f"<item:{i}>" for i in items) + ". Describe the next one."
        rows.append(Sample("bench", "seen", prompt, " ".join(rng.choice(words, text_tokens))))  # cut to length later
    probe = model.collate([rows[0].prompt], [""], 0)
    prompt_text = int(probe.attention_mask.sum()) - ITEMS_PER_ROW * QUERIES
    answer = text_tokens - prompt_text
    if answer < 8:
        raise SystemExit(f"--text {text_tokens} leaves no room for an answer after {prompt_text} prompt tokens")
    return rows, answer


def matmul_parameters(llm: FrozenLLM) -> tuple[int, int]:
    """(decoder-layer linear weights, LM head weights)."""
    body = sum(m.weight.numel() for m in llm.model.base_model.modules() if isinstance(m, torch.nn.Linear))
    return body, llm.model.get_output_embeddings().weight.numel()


def measure(steps: dict, count: int, warmup: int, rounds: int, device: torch.device) -> dict[str, tuple[float, float]]:
    """Seconds per step and peak memory in GB (device memory on a GPU, else RSS) of each named step.

    The steps take turns: `rounds` rounds of count / rounds timed steps each, after `warmup`
    untimed ones, so that a slow spell of a shared machine hits all of them alike.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    seconds = dict.fromkeys(steps, 0.0)
    peaks = dict.fromkeys(steps, 0.0)
    per_round = max(1, count // rounds)
    for _ in range(rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for _ in range(per_round):
                step()
            sync(device)
            seconds[name] += time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            peaks[name] = max(peaks[name], peak / 2**30)
    return {name: (seconds[name] / (per_round * rounds), peaks[name]) for name in steps}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_shape(shape: str, args, tokenizer_folder: Path, accelerator) -> list[dict]:
    device = accelerator.device
    dtype = getattr(torch, args.dtype)
    llm = random_llm(shape, tokenizer_folder, dtype, device, args.attention)
    rng = np.random.default_rng(0)
    catalogue = Catalogue(
        pd.DataFrame({"title": [f"Item {i}" for i in range(args.items)], "text_held_out": False}), [[0]] * 16,
        rng.normal(size=(args.items, CF_DIM)).astype(np.float32), rng.normal(size=(16, CF_DIM)).astype(np.float32),
    )
    qformer = ItemQFormer.from_bert(None, init="random", num_queries=QUERIES, cf_dim=CF_DIM, cf_scale=1.0, layers=args.qformer_layers)
    bridge = QFormerBridge(qformer, llm.hidden_size, embedding_scale(llm)).to(device)
    freeze_unused(bridge, CF_DIM)  # as the recipe does: the stage-1 text heads do not train
    model = ItemLanguageModel(llm, bridge, "ilm-rand", catalogue)
    model.train()
    rows, answer = synthetic_rows(model, args.batch_size, args.text, seed=1)
    config = load_config(Stage2Config, "stage2-quick", ["bridge=ilm-rand", f"max_target_tokens={answer}", f"batch_size={args.batch_size}"])
    optimizer = make_optimizer(bridge, config)
    scheduler = warmup_cosine(optimizer, 10, 10**6)

    def ilm_step():
        training_step(model, rows, config, accelerator, optimizer, scheduler)

    # The bare step: the same token ids, mask and labels, the prefix slots filled by one trainable tensor.
    host = model.collate([r.prompt for r in rows], [r.target for r in rows], answer)
    batch = host.to(device)
    soft = torch.nn.Parameter(torch.randn(len(batch.slot_positions), llm.hidden_size, device=device) * embedding_scale(llm))
    bare_optimizer = torch.optim.AdamW([soft], lr=1e-4, fused=device.type == "cuda")

    def bare_inputs():
        embeds = llm.embed(batch.input_ids)
        return embeds.reshape(-1, embeds.shape[-1]).index_copy(0, batch.slot_positions, soft.to(embeds.dtype)).view(embeds.shape)

    def bare_step():
        llm.forward_embeds(bare_inputs(), host.attention_mask, host.labels).loss.backward()  # label positions found on the host
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    def hf_step():
        out = llm.model(inputs_embeds=bare_inputs(), attention_mask=batch.attention_mask, labels=batch.labels)
        out.loss.backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    tokens = int(host.attention_mask.sum())
    labelled = int((host.labels[:, 1:] != -100).sum())
    body, head = matmul_parameters(llm)
    flops = 4 * (body * tokens + head * labelled)
    groups = [{"hf-eager": hf_step}, {"bare-eager": bare_step, "ilm-eager": ilm_step}]
    if args.compile == "on" or (args.compile == "auto" and device.type == "cuda"):
        groups.append({"bare-compiled": bare_step, "ilm-compiled": ilm_step})
    results = []
    for group in groups:
        if any(name.endswith("compiled") for name in group) and not llm.compiled:
            llm.compile()
            bridge.compile()
        records = {name: {"shape": shape, "step": name, "batch": args.batch_size, "sequence": int(host.input_ids.shape[1]),
                          "label_tokens": labelled} for name in group}
        try:
            started = time.perf_counter()
            for name, (seconds, peak) in measure(group, args.steps, args.warmup, args.rounds, device).items():
                records[name].update(
                    seconds_per_step=round(seconds, 5), samples_per_s=round(args.batch_size / seconds, 2),
                    tokens_per_s=round(tokens / seconds), tflops=round(flops / seconds / 1e12, 2),
                    peak_memory_gb=round(peak, 2), wall_s=round(time.perf_counter() - started, 1),
                )
        except Exception as err:  # one failing variant (say, compilation) must not lose the others
            for record in records.values():
                record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            traceback.print_exc()
        for record in records.values():
            print(json.dumps(record), flush=True)
            results.append(record)
    if args.check_syncs and device.type == "cuda":
        results.append({"shape": shape, "step": "host-device syncs", **{name: syncs_in(step) for name, step in (("ilm", ilm_step), ("bare", bare_step))}})
        print(json.dumps(results[-1]), flush=True)
    if args.profile is not None:
        profile(ilm_step, args.profile.with_name(f"{args.profile.stem}-{shape}{args.profile.suffix}"))
    by_step = {r["step"]: r for r in results if "error" not in r}
    for kind in ("eager", "compiled"):
        if f"ilm-{kind}" in by_step and f"bare-{kind}" in by_step:
            ilm, bare = by_step[f"ilm-{kind}"], by_step[f"bare-{kind}"]
            results.append({"shape": shape, "step": f"ilm/bare {kind}", "fraction": round(bare["seconds_per_step"] / ilm["seconds_per_step"], 3),
                            "extra_memory_gb": round(ilm["peak_memory_gb"] - bare["peak_memory_gb"], 2)})
            print(json.dumps(results[-1]), flush=True)
    return results


def syncs_in(step) -> str:
    """Run two steps with CUDA's synchronization debugging set to raise: "none", or the first sync."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            step()
        return "none"
    except RuntimeError as err:
        traceback.print_exc()
        return str(err).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def profile(step, path: Path) -> None:
    """Where the ILM step's time goes: torch.profiler tables (host and device) of 3 steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    tables = [prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)]
    if torch.cuda.is_available():
        tables.append(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(tables))


def tokenizer_folder(given: Path | None) -> Path:
    """A folder with SmolLM2's tokenizer: --tokenizer, else read once from the embedded GGUF."""
    if given is not None:
        return given
    from itemlm.models.gguf import convert_gguf
    from itemlm.models.llm import EMBEDDED_GGUF, EMBEDDED_INSTALL, EMBEDDED_PACKAGE
    from itemlm.paths import package_folder

    return convert_gguf(package_folder(EMBEDDED_PACKAGE, EMBEDDED_INSTALL) / EMBEDDED_GGUF)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["smollm2-135m"], choices=list(SHAPES))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on a GPU, 8 on the CPU")
    parser.add_argument("--prefix", type=int, default=ITEMS_PER_ROW * QUERIES, help="fixed: 4 items x 8 queries")
    parser.add_argument("--text", type=int, default=96, help="text tokens per row (template + prompt + answer)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on a GPU, 3 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (compilation happens here)")
    parser.add_argument("--rounds", type=int, default=None, help="bare and ILM steps take turns in this many rounds (default 1 on a GPU, --steps on the CPU)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on a GPU only")
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--qformer-layers", type=int, default=6, help="6: all of MiniLM's layers (the stage-1 default)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a folder with SmolLM2's tokenizer")
    parser.add_argument("--out", type=Path, default=Path("results/stage2_throughput.json"))
    parser.add_argument("--profile", type=Path, default=None, help="write torch.profiler tables of the ILM step (one file per shape)")
    parser.add_argument("--check-syncs", action="store_true", help="GPU: check that no step makes the host wait for the device")
    parser.add_argument("--save-llm", type=Path, default=None, help="only save the first shape (random, bf16) to this folder")
    args = parser.parse_args()
    if args.prefix != ITEMS_PER_ROW * QUERIES:
        parser.error(f"--prefix is {ITEMS_PER_ROW * QUERIES} (4 items x 8 queries) in this benchmark")

    accelerator = make_accelerator()
    device = accelerator.device
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (64 if gpu else 8)
    args.steps = args.steps or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    args.rounds = args.rounds or (1 if gpu else args.steps)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    folder = tokenizer_folder(args.tokenizer)
    if args.save_llm is not None:  # a model folder for the recipe (`itemlm stage2 llm=FOLDER`) at a real shape
        llm = random_llm(args.shapes[0], folder, getattr(torch, args.dtype), torch.device("cpu"), args.attention)
        llm.model.save_pretrained(args.save_llm)
        llm.tokenizer.save_pretrained(args.save_llm)
        print(f"saved a random {args.shapes[0]} to {args.save_llm}")
        return
    results = []
    for shape in args.shapes:
        results += bench_shape(shape, args, folder, accelerator)
        if gpu:
            torch.cuda.empty_cache()  # the shape's model is gone; start the next one from a clean cache
    report = {
        "machine": torch.cuda.get_device_name() if gpu else f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": args.dtype, "attention": args.attention,
        "text_tokens": args.text, "prefix_vectors": args.prefix, "qformer_layers": args.qformer_layers, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
