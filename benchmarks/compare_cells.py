"""Compare two committed bench cells example by example (paired bootstrap interval, permutation p-value),
resampling the examples about one subject together, as the report does.

For two stage-2 cell summaries of one dataset (`docs/results/<bench>/<dataset>/<cell>.json`), pairs their
per-example scores by example key: the report's measures (`per_example_scores`: SC over the text tasks and
on text-held-out subjects, HR@10 of trie generation and of ranking mode) and names_title on item_title. Used
for a cell and its superseded twin (the same bridge and seed under another setting), which the report, keyed
by bridge label, does not pair.

    .venv/bin/python benchmarks/compare_cells.py A.json B.json --out docs/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from itemlm.bench.results import paired_by_subject, per_example_scores
from itemlm.bench.stats import clustered_comparison
from itemlm.io import atomic_write_text, read_json


def scores(summary: dict) -> dict[str, dict[str, float]]:
    """measure -> example key -> score: the report's paired measures, and names_title on text-seen item_title answers."""
    out = per_example_scores(summary["per_example"])
    out["names_title"] = {
        f"{prompt_set}|{k}": float(v)
        for prompt_set, records in summary["per_example"].get("item_title", {}).items()
        for k, v, held in zip(records["key"], records.get("names_title", []), records["text_held_out"]) if not held
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="a stage-2 cell summary")
    parser.add_argument("b", type=Path, help="the cell to subtract")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    a, b = read_json(args.a, "cell summary"), read_json(args.b, "cell summary")
    result = {"a": a["id"], "b": b["id"], "measures": {}}
    b_scores = scores(b)
    for measure, a_scores in scores(a).items():
        x, y, subjects = paired_by_subject(a_scores, b_scores[measure])
        if len(set(subjects)) < 2:
            continue
        comparison = clustered_comparison(x, y, subjects, resamples=10000)
        result["measures"][measure] = {"a": float(x.mean()), "b": float(y.mean()), "examples": len(x), "subjects": len(set(subjects)),
                                       "difference": comparison.difference, "low": comparison.low, "high": comparison.high,
                                       "p_value": comparison.p_value}
        print(f"{measure:30s} a {x.mean():.4f}  b {y.mean():.4f}  a-b {comparison.difference:+.4f} "
              f"[{comparison.low:+.4f}, {comparison.high:+.4f}]  p {comparison.p_value:.4f}  n {len(x)}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
