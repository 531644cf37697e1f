"""Stage-2 speed: the full ILM training step against a bare frozen-LLM soft-prompt step of the same shape.

Both steps see the same batch shape (B sequences of T input vectors, the same labelled target
tokens) and do forward + backward through the frozen LLM + AdamW. The bare step's item vectors are
a trainable tensor; the ILM step builds them with the Q-Former and adapter from CF vectors, and
also pays for tokenization and splicing. The target: ILM >= 90% of the bare step's samples/s.
Also measured: latency of one recommendation (top-10, constrained beam search, 10 beams).

    .venv/bin/python benchmarks/stage2_throughput.py [--steps 8] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from itemlm.config import load_config
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.samples import build_samples, group_by_task, mix_samples
from itemlm.train.stage2 import Stage2Config, build_bridge, load_everything, parameter_groups


def timed_steps(step, count: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(count):
        step()
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/stage2_throughput.json"))
    args = parser.parse_args()

    config = load_config(Stage2Config, "stage2-quick", ["bridge=ilm-rand", f"batch_size={args.batch_size}"])
    dataset, split, cf, llm, catalogue = load_everything(config, args.dtype)
    bridge = build_bridge(config, cf.dim, 1.0, llm)
    model = ItemLanguageModel(llm, bridge, "ilm-rand", catalogue)
    model.train()
    samples = build_samples(dataset, split, "train", history_length=config.history_length)
    batch = mix_samples(group_by_task(samples), config.task_weights, args.batch_size, seed=1)
    prompts, targets = [s.prompt for s in batch], [s.target for s in batch]

    optimizer = torch.optim.AdamW(parameter_groups(bridge, config))

    def ilm_step():
        loss, _ = model.loss(prompts, targets, config.max_target_tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # The bare step: the same embeddings and labels, with the spliced vectors as one trainable tensor.
    with torch.no_grad():
        embeds, mask, labels = model.batch(prompts, targets, config.max_target_tokens)
    soft = torch.nn.Parameter(embeds.clone())
    bare_optimizer = torch.optim.AdamW([soft], lr=1e-3)

    def bare_step():
        out = llm.forward_embeds(soft, mask, labels)
        out.loss.backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    bare = timed_steps(bare_step, args.steps)
    ilm = timed_steps(ilm_step, args.steps)

    model.eval()
    history = split.train_sequences()[0][-10:].tolist()
    model.recommend(history=history, k=10)  # warm-up: builds the title trie
    started = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        model.recommend(history=history, k=10)
    latency = (time.perf_counter() - started) / repeats

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "llm": "SmolLM2-135M-Instruct (embedded)",
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "sequence_length": int(mask.shape[1]),
        "label_tokens": int((labels != -100).sum()),
        "bare_step_seconds": round(bare, 3),
        "ilm_step_seconds": round(ilm, 3),
        "bare_samples_per_second": round(args.batch_size / bare, 2),
        "ilm_samples_per_second": round(args.batch_size / ilm, 2),
        "ilm_fraction_of_bare": round(bare / ilm, 3),
        "recommend_top10_latency_seconds": round(latency, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
