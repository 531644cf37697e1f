"""names_title of committed bench cells, split by how many training interactions each item has.

Reads stage-2 cell summaries (`docs/results/<bench>/<dataset>/<cell>.json`: per example, the item and
whether the answer named it) and the prepared dataset's leave-one-out training split, and reports for
each cell the share of text-seen item_title answers (both prompt sets) that name the item, for cold
items (at most `--cold` training interactions) and for the others. No model is loaded.

    .venv/bin/python benchmarks/names_by_popularity.py CELL.json [CELL.json ...] \
        --data-home results/standard/data --out docs/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from itemlm.data.prepare import load_dataset
from itemlm.data.splits import leave_one_out_split
from itemlm.errors import InputError
from itemlm.io import atomic_write_text, read_json

ITEM_IN_KEY = re.compile(r"\|item=(\d+)\|")


def named_text_seen(summary: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item, named) for every text-seen item_title answer of a stage-2 cell, both prompt sets."""
    records = summary.get("per_example", {}).get("item_title")
    if not records:
        raise InputError("no item_title answers (per_example.item_title) in this summary: is it a stage-2 cell?", path=path)
    items, named = [], []
    for prompt_set in records.values():
        for key, hit, held_out in zip(prompt_set["key"], prompt_set["names_title"], prompt_set["text_held_out"]):
            if not held_out:
                items.append(int(ITEM_IN_KEY.search(key).group(1)))
                named.append(bool(hit))
    return np.array(items), np.array(named)


def share(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", type=Path, nargs="+", help="stage-2 cell summaries of one dataset")
    parser.add_argument("--data-home", default=None, help="where the cells' dataset is prepared (the bench's data home)")
    parser.add_argument("--cold", type=int, default=5, help="at most this many training interactions makes an item cold")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    summaries = {path: read_json(path, "cell summary") for path in args.cells}
    datasets = {summary["dataset"] for summary in summaries.values()}
    if len(datasets) != 1:
        raise SystemExit(f"the cells come from {len(datasets)} datasets ({', '.join(sorted(datasets))}); give cells of one")
    dataset_name = datasets.pop()
    split = leave_one_out_split(load_dataset(dataset_name, args.data_home))
    interactions = np.bincount(split.train["item"].to_numpy(), minlength=split.num_items)

    result = {"dataset": dataset_name, "cold_at_most_training_interactions": args.cold, "cells": {}}
    for path, summary in summaries.items():
        items, named = named_text_seen(summary, path)
        cold = interactions[items] <= args.cold
        row = {"answers": int(len(items)), "cold_answers": int(cold.sum()), "names_title": share(named),
               "names_title_cold": share(named[cold]), "names_title_warm": share(named[~cold])}
        result["cells"][summary["id"]] = row
        print(f"{summary['id']:60s} names {row['names_title']:.3f}  cold ({row['cold_answers']}) "
              f"{row['names_title_cold']:.3f}  warm {row['names_title_warm']:.3f}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
