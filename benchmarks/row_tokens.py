"""What the frozen LLM reads per training row, per task: before and after the cheaper-rows changes.

"Before" is the chat template's default system prompt and a shuffled mixture; "after" is the empty
system prompt (`system_prompt: ""`) and batches of similar length (`bucket_by_length`). Reports
real tokens per row per task (item vectors counted), and the padded tokens per row of batch-8
batches, which is what the LLM computes on; `--time-steps N` also times N training steps of each.

    .venv/bin/python benchmarks/row_tokens.py --config standard --time-steps 20
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from itemlm.config import load_config
from itemlm.tasks.batching import bucket_by_length
from itemlm.tasks.build import build_samples
from itemlm.tasks.mixture import mix_samples
from itemlm.tasks.sample import group_by_task
from itemlm.train.stage2 import Stage2Config, build_bridge, load_everything, make_optimizer, row_length
from itemlm.models.ilm import ItemLanguageModel


def row_tokens(model: ItemLanguageModel, samples, config: Stage2Config) -> list[int]:
    batch = model.collate([s.prompt for s in samples], [s.target for s in samples], config.max_target_tokens)
    return batch.attention_mask.sum(1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="standard")
    parser.add_argument("--rows", type=int, default=800, help="mixture rows to lay out")
    parser.add_argument("--time-steps", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results/row_tokens.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    config = load_config(Stage2Config, args.config, args.overrides)
    dataset, split, cf, llm, catalogue = load_everything(config, config.llm_dtype)
    torch.manual_seed(0)
    bridge = build_bridge(config, cf.dim, 1.0, llm)
    model = ItemLanguageModel(llm, bridge, config.bridge, catalogue)
    samples = build_samples(dataset, split, "train", seed=config.seed, history_length=config.history_length, prompts="seen")
    mixture = mix_samples(group_by_task(samples), config.task_weights, args.rows, config.seed)
    result: dict = {"config": args.config, "bridge": config.bridge, "vectors_per_item": model.num_vectors(), "batch_size": config.batch_size}
    for label, system_prompt, bucketed in (("before", None, False), ("after", config.system_prompt, True)):
        llm.system_prompt = system_prompt
        per_task = defaultdict(list)
        for sample, tokens in zip(mixture, row_tokens(model, mixture, config)):
            per_task[sample.task].append(tokens)
        order = bucket_by_length(mixture, config.batch_size, row_length(model, config), seed=config.seed) if bucketed else mixture
        padded = [model.collate([s.prompt for s in order[b : b + config.batch_size]], [s.target for s in order[b : b + config.batch_size]],
                                config.max_target_tokens).input_ids.numel() / config.batch_size
                  for b in range(0, len(order), config.batch_size)]
        entry = {
            "tokens_per_row": {task: round(float(np.mean(v)), 1) for task, v in sorted(per_task.items())},
            "tokens_per_row_all": round(float(np.mean([t for v in per_task.values() for t in v])), 1),
            "padded_tokens_per_row": round(float(np.mean(padded)), 1),
        }
        if args.time_steps:
            optimizer = make_optimizer(bridge, config)
            model.train()
            started = None
            for step in range(args.time_steps + 2):  # two warm-up steps
                if step == 2:
                    started = time.perf_counter()
                rows = order[step * config.batch_size : (step + 1) * config.batch_size]
                loss, _ = model.loss_on(model.collate([s.prompt for s in rows], [s.target for s in rows], config.max_target_tokens))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            entry["samples_per_s"] = round(args.time_steps * config.batch_size / (time.perf_counter() - started), 2)
        result[label] = entry
        print(label, json.dumps(entry), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
