"""Evaluation speed of a trained stage-2 model on the test examples the evaluator scores.

- trie generation (beam search over catalogue titles, 10 beams, top 10): the shared-prompt cache
  (each prompt's keys and values kept once for all its beams) against the plain cache that holds
  the prompt once per beam, on the same prompts; it reports both times and whether the top-10
  lists are the same;
- greedy text generation at several batch sizes (the evaluator generates 32 prompts at a time).

Numbers only. Run it alone (2 torch processes on 2 cores slow each other far more than 2x).

    .venv/bin/python benchmarks/evaluation_speed.py --model runs/stage2/standard/model \\
        --trie-prompts 16 --text-prompts 32 --out /tmp/evaluation_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.eval.stage2_eval import consumed_before, evaluation_plan
from itemlm.io import atomic_write_text
from itemlm.models.decode import Decoding
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.build import build_samples


def trie_lists(model, samples, batch_size: int) -> tuple[list[list[tuple[int, float]]], float]:
    started, ranked = time.perf_counter(), []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        ranked += model.recommend_prompts([s.prompt for s in chunk], 10, [consumed_before(model, s) for s in chunk], 10)
    return ranked, time.perf_counter() - started


def trie_comparison(model, samples, batch_size: int) -> dict:
    shared, shared_seconds = trie_lists(model, samples, batch_size)
    sharing = Decoding.share_prompt
    Decoding.share_prompt = lambda self, state: state  # the plain cache: the prompt once per beam
    try:
        plain, plain_seconds = trie_lists(model, samples, batch_size)
    finally:
        Decoding.share_prompt = sharing
    same = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(shared, plain))
    gap = max((abs(x - y) for a, b in zip(shared, plain) for (_, x), (_, y) in zip(a, b)), default=0.0)
    return {"prompts": len(samples), "batch_size": batch_size, "plain_seconds": round(plain_seconds, 2),
            "shared_seconds": round(shared_seconds, 2), "speedup": round(plain_seconds / shared_seconds, 3),
            "same_top10_lists": same, "max_logprob_difference": gap}


def text_batches(model, samples, batch_sizes: list[int], max_new_tokens: int) -> dict:
    prompts, seconds = [s.prompt for s in samples], {}
    for batch_size in batch_sizes:
        started = time.perf_counter()
        for start in range(0, len(prompts), batch_size):
            model.generate(prompts[start : start + batch_size], max_new_tokens)
        seconds[str(batch_size)] = round(time.perf_counter() - started, 2)
    return {"prompts": len(prompts), "max_new_tokens": max_new_tokens, "seconds_by_batch_size": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stage-2 model folder")
    parser.add_argument("--dataset", default="ml-100k-text", help="when the model's run folder does not say")
    parser.add_argument("--trie-prompts", type=int, default=16)
    parser.add_argument("--text-prompts", type=int, default=32)
    parser.add_argument("--batch-sizes", default="8,16,32", help="text generation batch sizes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model = ItemLanguageModel.from_pretrained(args.model, dtype="float32").eval()
    run_config = args.model.parent / "config.json"  # the run's settings: its data and prompts
    run = json.loads(run_config.read_text()) if run_config.exists() else {}
    dataset = load_dataset(run.get("dataset", args.dataset), run.get("data_home"))
    samples = build_samples(dataset, make_split(dataset), "test", seed=0, history_length=run.get("history_length", 10), prompts="all")
    plan = evaluation_plan(samples, 200, 943, 0)
    model.trie  # built once, outside the clock
    report = {
        "trie": {task: trie_comparison(model, plan[task, "seen"][: args.trie_prompts], 8) for task in ("sequential", "straightforward")},
        "text": text_batches(model, plan["item_description", "seen"][: args.text_prompts],
                             [int(b) for b in args.batch_sizes.split(",")], 40),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
