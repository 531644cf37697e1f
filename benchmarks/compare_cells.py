"""Compare two committed bench cells example by example (paired bootstrap interval, permutation p-value).

For two stage-2 cell summaries of one dataset (`docs/results/<bench>/<dataset>/<cell>.json`), pairs their
per-example scores by example key: SC over the text tasks, SC on text-held-out subjects, names_title on
item_title, and HR@10 of trie generation. Used for a cell and its superseded twin (the same bridge and
seed under another setting), which the report, keyed by bridge label, does not pair.

    .venv/bin/python benchmarks/compare_cells.py A.json B.json --out docs/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from itemlm.bench.stats import align, paired_comparison
from itemlm.io import atomic_write_text, read_json

RANKED = ("sequential", "straightforward")


def scores(summary: dict) -> dict[str, dict[str, float]]:
    """measure -> example key -> score, from a cell summary's per_example records."""
    out: dict[str, dict[str, float]] = {"SC (text tasks)": {}, "SC (text-held-out subjects)": {}, "names_title": {}, "HR@10 (trie generation)": {}}
    out["HR@10 (ranking mode)"] = {}
    for task, by_prompts in summary["per_example"].items():
        if task == "ranking_mode":  # one record per user: its rank in ranking mode and in the retriever's order
            out["HR@10 (ranking mode)"] = {f"user={u}": float(r < 10) for u, r in zip(by_prompts["user"], by_prompts["rank_ranking_mode"])}
            continue
        for records in by_prompts.values():
            keys = records.get("key", [])
            if task in RANKED:
                out["HR@10 (trie generation)"].update({k: float(r < 10) for k, r in zip(keys, records["rank"])})
            elif "SC" in records:
                out["SC (text tasks)"].update(zip(keys, map(float, records["SC"])))
                held = records.get("text_held_out") or [False] * len(keys)
                out["SC (text-held-out subjects)"].update({k: float(v) for k, v, h in zip(keys, records["SC"], held) if h})
                if "names_title" in records:
                    out["names_title"].update({k: float(v) for k, v, h in zip(keys, records["names_title"], held) if not h})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="a stage-2 cell summary")
    parser.add_argument("b", type=Path, help="the cell to subtract")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    a, b = read_json(args.a, "cell summary"), read_json(args.b, "cell summary")
    result = {"a": a["id"], "b": b["id"], "measures": {}}
    for measure, a_scores in scores(a).items():
        x, y = align(a_scores, scores(b)[measure])
        if len(x) == 0:
            continue
        comparison = paired_comparison(x, y, resamples=2000)
        result["measures"][measure] = {"a": float(x.mean()), "b": float(y.mean()), "examples": len(x),
                                       "difference": comparison.difference, "low": comparison.low, "high": comparison.high,
                                       "p_value": comparison.p_value}
        print(f"{measure:30s} a {x.mean():.4f}  b {y.mean():.4f}  a-b {comparison.difference:+.4f} "
              f"[{comparison.low:+.4f}, {comparison.high:+.4f}]  p {comparison.p_value:.4f}  n {len(x)}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
