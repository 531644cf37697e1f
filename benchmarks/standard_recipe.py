"""The standard recipe against its floors: numbers only, ready to commit under docs/results/.

Reads a finished `itemlm stage2 --config standard` run (and, when given, the text-only baseline
evaluated on the same examples), computes the SC floors on exactly those examples
(itemlm.bench.floors), and writes one JSON of numbers (no MovieLens text: generated examples are
dropped, and no strings at all) plus a markdown table on stdout.

    itemlm stage2 --config standard
    itemlm stage2 --config standard bridge=text-only name=standard-text-only
    .venv/bin/python benchmarks/standard_recipe.py --run runs/stage2/standard \\
        --text-only runs/stage2/standard-text-only --out docs/results/standard_ml100k.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from itemlm.bench.summaries import numbers_only, without_examples
from itemlm.eval.curves import read_curve

TEXT_TASKS = ("item_title", "item_genres", "item_description", "item_pitch", "user_profile", "conversational")
FLOOR_TASKS = ("item_title", "item_genres", "item_description", "item_pitch", "user_profile")


def floors_for(run: Path) -> dict:
    from itemlm.bench.floors import sc_floors
    from itemlm.cf.cache import load_or_train_mf
    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.train.stage2 import Stage2Config

    config = from_dict(Stage2Config, json.loads((run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    cf, _ = load_or_train_mf(split, config.mf, dataset=config.dataset, home=config.data_home, folder=config.cf_model)
    floors = sc_floors(dataset, split, cf, eval_seed=config.eval_seed, history_length=config.history_length,
                       max_text_samples=config.eval_text_samples, max_rec_samples=config.eval_rec_samples, encoder=config.sc_encoder)
    return {task: {name: {k: v for k, v in entry.items() if k != "example"} for name, entry in by.items()} for task, by in floors.items()}


def cell(m: dict | None, key: str) -> str:
    value = None if m is None else m.get(key)
    return "" if value is None else f"{value:.3f}"


def markdown(result: dict) -> str:
    model, text_only, floors = result["model"]["test"], result.get("text_only", {}).get("test", {}), result["floors"]
    lines = ["| task | prompts | model SC text-seen | text-held-out | text-only seen | text-only held-out | CF-neighbour floor seen / held-out | generic floor | names_title seen / held-out |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task in TEXT_TASKS:
        for prompts in ("seen", "unseen"):
            m = model.get(task, {}).get(prompts)
            if m is None:
                continue
            t = text_only.get(task, {}).get(prompts)
            f = floors.get(task, {})
            neighbour = f.get("CF neighbour's reference")
            names = f"{cell(m, 'names_title_text_seen')} / {cell(m, 'names_title_text_held_out')}" if "names_title" in m else ""
            lines.append(f"| {task} | {prompts} | {cell(m, 'SC_text_seen') or cell(m, 'SC')} | {cell(m, 'SC_text_held_out')} | "
                         f"{cell(t, 'SC_text_seen') or cell(t, 'SC')} | {cell(t, 'SC_text_held_out')} | "
                         f"{cell(neighbour, 'SC_text_seen') or cell(neighbour, 'SC')} / {cell(neighbour, 'SC_text_held_out')} | "
                         f"{cell(f.get('generic sentence'), 'SC')} | {names} |")
    for task in ("sequential", "straightforward"):
        for prompts in ("seen", "unseen"):
            m = model.get(task, {}).get(prompts)
            if m:
                lines.append(f"| {task} | {prompts} | HR@10 {m['HR@10']:.3f} | NDCG@10 {m['NDCG@10']:.3f} | | | | | n={m['n']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/stage2/standard"))
    parser.add_argument("--text-only", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/results/standard_ml100k.json"))
    parser.add_argument("--skip-floors", action="store_true", help="do not compute the SC floors (minutes of encoding)")
    args = parser.parse_args()

    metrics = json.loads((args.run / "metrics.json").read_text())
    result = {
        "model": {"train": metrics["train"], "warm_start": metrics.get("warm_start"), "eval_seconds": metrics.get("eval_seconds"),
                  "peak_rss_gb": metrics.get("peak_rss_gb"), "test": without_examples(metrics.get("test", {}))},
        "curve": read_curve(args.run / "metrics.jsonl"),
        "floors": {} if args.skip_floors else floors_for(args.run),
    }
    if args.text_only is not None:
        baseline = json.loads((args.text_only / "metrics.json").read_text())
        result["text_only"] = {"eval_seconds": baseline.get("eval_seconds"), "test": without_examples(baseline.get("test", {}))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # numbers only (no run settings spelled out, no text): the command and the machine go in docs/benchmarks.md
    args.out.write_text(json.dumps(numbers_only(result), indent=1))
    print(markdown(result))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
