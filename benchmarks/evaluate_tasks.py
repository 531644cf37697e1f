"""Score a finished stage-2 run on chosen tasks and compare models example by example.

A recipe change usually moves a few tasks; scoring only those (on exactly the examples the full
evaluation uses, `evaluation_plan`) takes minutes where the whole evaluation takes an hour. Given
`--against` runs, the scores are paired with theirs by example key (paired bootstrap 95% interval and
permutation p-value, `itemlm.bench.stats`). Each run's seen-vs-unseen prompt gap is paired by subject
too. The JSON holds numbers and example ids only (no dataset text).

    .venv/bin/python benchmarks/evaluate_tasks.py --run runs/stage2/standard-tags \\
        --tasks item_genres item_description --prompts seen \\
        --against runs/stage2/standard-paired --out docs/results/tag_slots_ml100k.json

`--consensus N` scores free answers by consensus decoding (`itemlm.models.consensus`), its parts kept
apart from the greedy ones, so `--against` the same run pairs the two decodings example by example.

`--run` without a model to score (`--no-score`) only reads its per_example.json: the gaps of a run
that was evaluated in full.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from itemlm.bench.stats import align, paired_comparison
from itemlm.bench.summaries import numbers_only, without_examples
from itemlm.io import atomic_write_text


def subject(key: str) -> str:
    """An example key without its phrasing: "item_title|item_title.2|item=4|..." -> "item_title|item=4|..."."""
    task, _template, rest = key.split("|", 2)
    return f"{task}|{rest}"


def subject_item(key: str) -> int:
    """The item an example key is about: "item_title|item_title.2|item=4|..." -> 4."""
    return int(key.split("item=")[1].split("|")[0])


def scores(records: dict, metric: str = "SC", by=lambda key: key) -> dict[str, float]:
    return {by(k): float(v) for k, v in zip(records["key"], records[metric])}


def score_run(run: Path, tasks: list[str], prompts: str, text_samples: int | None = None, consensus: int = 0) -> tuple[dict, dict, float]:
    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.eval.stage2_eval import evaluate_stage2
    from itemlm.io import folder_digest
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.tasks.build import build_samples
    from itemlm.train.stage2 import Stage2Config

    config = from_dict(Stage2Config, json.loads((run / "config.json").read_text()))
    if text_samples is not None:  # e.g. a baseline evaluated earlier under another budget, scored on today's examples
        config.eval_text_samples = text_samples
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    samples = build_samples(dataset, split, "test", seed=config.eval_seed, history_length=config.history_length, prompts="all", tasks=tasks)
    if prompts != "both":
        samples = [s for s in samples if s.held_out_prompt == (prompts == "unseen")]
    model = ItemLanguageModel.from_pretrained(run / "model", dtype=config.eval_dtype)
    model.consensus = consensus
    parts = run / ("task-evaluation-parts" if not consensus else f"task-evaluation-parts-consensus{consensus}")
    started = time.perf_counter()
    report, per_example = evaluate_stage2(
        model, samples, max_text_samples=config.eval_text_samples, max_rec_samples=config.eval_rec_samples,
        num_beams=config.eval_beams, max_new_tokens=config.max_target_tokens, seed=config.eval_seed, encoder=config.sc_encoder,
        resume_dir=parts, model_fingerprint=folder_digest(run / "model"),
    )
    return report, per_example, time.perf_counter() - started


def prompt_gaps(per_example: dict) -> dict:
    """Per text task: unseen minus seen prompt SC on the same subjects."""
    gaps = {}
    for task, by_set in per_example.items():
        if {"seen", "unseen"} <= set(by_set) and "SC" in by_set["seen"]:
            unseen, seen = align(scores(by_set["unseen"], by=subject), scores(by_set["seen"], by=subject))
            if len(seen) >= 2:
                gaps[task] = paired_comparison(unseen, seen, resamples=2000).to_dict()
    return gaps


def text_seen_only(records: dict) -> dict:
    """The records of subjects whose text the model trained on (all of them when the task has no such mark)."""
    keep = [not held for held in records.get("text_held_out", [False] * len(records["key"]))]
    return {name: [v for v, k in zip(values, keep) if k] for name, values in records.items() if isinstance(values, list)}


def comparisons(ours: dict, theirs: dict) -> dict:
    """Per task and prompt set: our SC minus theirs on the examples both answered, and on the text-seen ones."""
    out = {}
    for task, by_set in ours.items():
        for prompt_set, records in by_set.items():
            other = theirs.get(task, {}).get(prompt_set)
            if other is None or "SC" not in records:
                continue
            for label, mine in ((f"{task}/{prompt_set}", records), (f"{task}/{prompt_set}/text-seen", text_seen_only(records))):
                a, b = align(scores(mine), scores(other))
                if len(a) >= 2:
                    out[label] = paired_comparison(a, b, resamples=2000).to_dict()
    return out


def write_result(result: dict, out: Path | None, shown: dict | None = None) -> None:
    """Write a script's numbers to `out` (atomically, when given) and print them (or the `shown` part)."""
    if out:
        atomic_write_text(out, json.dumps(result, indent=1))
    print(json.dumps(result if shown is None else shown, indent=1))


def load_run(run: Path):
    """A finished stage-2 run's config, dataset, split and model (in its evaluation's float type)."""
    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.train.stage2 import Stage2Config

    config = from_dict(Stage2Config, json.loads((run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    return config, dataset, split, ItemLanguageModel.from_pretrained(run / "model", dtype=config.eval_dtype)


def scored_examples(run: Path) -> dict:
    """A run's per-example records: its full evaluation's, then any task scored on its own by this script."""
    path = run / "per_example.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    for part in sorted((run / "task-evaluation-parts").glob("*.json")):
        task, prompt_set = part.stem.rsplit("-", 1)
        records.setdefault(task, {})[prompt_set] = json.loads(part.read_text())["records"]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run folder")
    parser.add_argument("--tasks", nargs="+", default=None, help="tasks to score (default: every task)")
    parser.add_argument("--prompts", choices=("seen", "unseen", "both"), default="both")
    parser.add_argument("--text-samples", type=int, default=None, help="subjects per text task (default: the run's eval_text_samples)")
    parser.add_argument("--no-score", action="store_true", help="read the run's per_example.json instead of scoring")
    parser.add_argument("--against", type=Path, nargs="*", default=[], help="runs to compare with (their per_example.json and task-evaluation-parts)")
    parser.add_argument("--consensus", type=int, default=0,
                        help="free answers as the consensus of the greedy one and N samples (kept apart from greedy parts; --against RUN compares)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON (numbers only)")
    args = parser.parse_args()

    result: dict = {"run": str(args.run), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    if args.no_score:
        per_example = json.loads((args.run / "per_example.json").read_text())
        per_example = {t: v for t, v in per_example.items() if args.tasks is None or t in args.tasks}
    else:
        report, per_example, seconds = score_run(args.run, args.tasks, args.prompts, args.text_samples, args.consensus)
        result |= {"metrics": numbers_only(without_examples(report)), "seconds": round(seconds, 1)}
    result["unseen_minus_seen"] = prompt_gaps(per_example)
    for other in args.against:
        result.setdefault("minus", {})[str(other)] = comparisons(per_example, scored_examples(other))
    result["per_example_sc"] = {t: {p: scores(r) for p, r in by.items() if "SC" in r} for t, by in per_example.items()}
    write_result(result, args.out, shown={k: v for k, v in result.items() if k != "per_example_sc"})


if __name__ == "__main__":
    main()
