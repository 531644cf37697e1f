"""Does a trained model describe items it never read about better with unknown-title vectors?

For a text-held-out item the bridge's title vectors interpolate between other items' titles, and
the LLM describes a film that does not exist (`held_out_probe.py`: blanking those vectors, or
borrowing the CF neighbour's, does not lift SC above the CF-neighbour floor either). This script
trains a finished run's unknown-title vectors (`itemlm.train.unknown_titles`, what
`unknown_titles.steps` does at the end of `itemlm stage2`: bridge and LLM frozen, text-seen items'
description, pitch and genre rows with their titles hidden), then scores the run's own
text-held-out evaluation subjects (`evaluation_plan`: same subjects and phrasings) with them,
paired with the run's answers (bootstrap 95% interval, permutation p). Numbers only (no text).

    .venv/bin/python benchmarks/unknown_title_probe.py --run results/standard/cells/ml-100k-text/<cell>/run \\
        --steps 150 --out docs/results/unknown_titles_ml100k.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from evaluate_tasks import scored_examples, write_result  # this folder's script: a run's per-example records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run (MLP bridge) with its per_example.json")
    parser.add_argument("--steps", type=int, nargs="+", default=[150], help="scored after each of these step counts (a learning curve)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--tasks", nargs="+", default=["item_description", "item_pitch"], help="tasks scored on text-held-out subjects")
    parser.add_argument("--subjects", type=int, default=None, help="score only the first N text-held-out subjects per set (a quick check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from itemlm.bench.stats import paired_comparison
    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.eval.stage2_eval import evaluate_text_task, evaluation_plan, example_key
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.models.precision import resolve_dtype
    from itemlm.tasks.build import build_samples
    from itemlm.tasks.sample import group_by_task
    from itemlm.train.stage2 import Stage2Config
    from itemlm.train.unknown_titles import UnknownTitlesConfig, train_unknown_titles

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    if not (args.run / "config.json").is_file() or not (args.run / "model").is_dir():
        raise SystemExit(f"{args.run}: not a finished `itemlm stage2` run (expected config.json and model/ in it)")
    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    train = build_samples(dataset, split, "train", seed=config.seed, history_length=config.history_length, prompts="seen",
                          tasks=UnknownTitlesConfig().tasks)
    test = build_samples(dataset, split, "test", seed=config.eval_seed, history_length=config.history_length, prompts="all", tasks=args.tasks)
    plan = evaluation_plan(test, config.eval_text_samples, 0, config.eval_seed)
    scored = scored_examples(args.run)
    result: dict = {"run": str(args.run), "batch_size": args.batch_size, "learning_rate": args.learning_rate}

    trained = ItemLanguageModel.from_pretrained(args.run / "model", dtype=resolve_dtype(config.llm_dtype))  # as in stage 2
    title_slots = trained.bridge.num_tokens - config.warm_start.tag_tokens
    model = ItemLanguageModel.from_pretrained(args.run / "model", dtype=config.eval_dtype)  # as the run's evaluation
    train_by_task, result["curve"], done = group_by_task(train), [], 0
    for steps in sorted(args.steps):
        phase = UnknownTitlesConfig(steps=steps - done, batch_size=args.batch_size, learning_rate=args.learning_rate)
        training = train_unknown_titles(trained, train_by_task, phase, title_slots, seed=args.seed + done,
                                        max_target_tokens=config.max_target_tokens, keep_going=done > 0)
        done = steps
        model.unknown_titles = trained.unknown_titles  # the catalogue's text-held-out items read them
        point = {"steps": steps, "rows_seen": steps * args.batch_size, "training_seconds": training["seconds"],
                 "loss_first": training["loss_first"], "loss_last": training["loss_last"]}
        for task in args.tasks:
            for prompt_set in ("seen", "unseen"):
                subjects = [s for s in plan[task, prompt_set] if s.text_held_out_subject][: args.subjects]
                own = dict(zip(scored[task][prompt_set]["key"], scored[task][prompt_set]["SC"]))
                with torch.no_grad():
                    metrics, records = evaluate_text_task(model, subjects, 32, config.max_target_tokens, False, config.sc_encoder)
                before, after = np.array([own[example_key(s)] for s in subjects]), np.array(records["SC"])
                point[f"{task}/{prompt_set}"] = {
                    "subjects": len(subjects), "run": round(float(before.mean()), 4), "unknown_titles": round(float(metrics["SC"]), 4),
                    "difference": paired_comparison(after, before, resamples=2000).to_dict(),
                }
        result["curve"].append(point)
        result["seconds"] = round(time.perf_counter() - started, 1)
        write_result(result, args.out, shown=point)  # written after every point: a stopped curve keeps its points


if __name__ == "__main__":
    main()
