"""A finished cell's numbers in one small JSON file: what the report reads, and what gets committed.

A cell's folder holds models, checkpoints and generated text, none of which can be committed (the
text quotes dataset content, and MovieLens may not be redistributed). Its summary keeps numbers
and ids only: the cell's record (time, memory, attempts), its metrics, its per-example scores (the
paired bootstrap needs them; examples are named by ids such as `item=4`) and its learning curve.
Summaries live in their own folder (`summaries_dir`, e.g. docs/results/bench-standard), one file per
cell, so a grid too long for one working session is committed cell by cell: on a fresh clone the
bench skips every summarized cell and the report is rebuilt from the summaries alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from itemlm.bench.grid import DATA_IDENTITY, Cell
from itemlm.bench.records import RESULT_FILE, cell_record, is_done, read_json, read_jsonl
from itemlm.errors import InputError
from itemlm.eval.stage2_eval import RANKED_TASKS
from itemlm.io import atomic_write_text

SUMMARY_VERSION = 1
PER_EXAMPLE_FIELDS = ("key", "SC", "reference_nll", "text_held_out", "names_title", "user", "rank")
"""What a per-example record keeps (never `generated`, the model's text)."""


def numbers_only(value):
    """`value` with every string dropped (dict keys stay: they name tasks and metrics; a list
    holding any string goes whole), NaN and inf as None, and the containers this empties dropped."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            reduced = None if isinstance(item, str) else numbers_only(item)
            if reduced is not None or (item is None or isinstance(item, float)):
                kept[str(key)] = reduced
        return kept or None
    if isinstance(value, (list, tuple)):
        if not value:
            return []
        if any(isinstance(item, str) for item in value):
            return None
        if all(isinstance(item, (dict, list, tuple)) for item in value):
            kept = [reduced for reduced in map(numbers_only, value) if reduced is not None]
            return kept or None
        return [numbers_only(item) for item in value]
    return value if isinstance(value, (bool, int)) or value is None else None


def without_examples(value):
    """`value` without its "examples" entries (what the model wrote; per_example has their scores)."""
    if isinstance(value, dict):
        return {k: without_examples(v) for k, v in value.items() if k != "examples"}
    return value


def per_example_numbers(per_example: dict) -> dict:
    """task -> prompt set -> the per-example fields the report uses (ranking mode: task -> fields,
    one row per user); ids kept, text dropped."""

    def kept(record: dict) -> dict:
        return {name: values for name, values in record.items() if name in PER_EXAMPLE_FIELDS or name.startswith("rank_")}

    return {
        task: {prompt_set: kept(record) for prompt_set, record in by_set.items()}
        if all(isinstance(record, dict) for record in by_set.values()) else kept(by_set)
        for task, by_set in per_example.items()
    }


def trained_llm_type(summary: dict) -> str:
    """The float type a stage-2 cell trained its LLM in: "bfloat16", "float32", or "-" where the
    summary does not record it (cells summarized before 2026-12-03, and cells of other kinds)."""
    recorded = (summary.get("metrics") or {}).get("train", {}).get("llm_bfloat16")
    return {True: "bfloat16", False: "float32"}.get(recorded, "-")


def trie_generation_seconds(summary: dict) -> float | None:
    """Seconds a stage-2 cell's evaluation spent on trie generation (the ranked tasks, every prompt
    set), or None where its parts were not timed (cells evaluated before 2026-12-03)."""
    test = (summary.get("metrics") or {}).get("test", {})
    parts = [part.get("seconds") for task in RANKED_TASKS for part in test.get(task, {}).values()]
    return round(sum(parts), 1) if parts and None not in parts else None


STAGE1_READING = ("i2t_recall@10", "t2i_recall@10", "itg_loss")


def stage1_reading(stage1_folder: Path) -> dict:
    """The retrieval numbers of the stage-1 model a stage-2 cell read, per subject group. Stage-1
    training is not bit-reproducible across machines, so a stage-1 cell re-run on a fresh clone (for
    the stage-2 cells that read its model) can differ from its committed summary; this says which
    model the stage-2 numbers come from."""
    metrics = read_json(stage1_folder / "run" / "metrics.json")
    return {group: {name: metrics[group][name] for name in STAGE1_READING if name in metrics.get(group, {})}
            for group in ("text_seen", "text_held_out") if isinstance(metrics.get(group), dict)}


def summarize(cell: Cell, bench_out: Path) -> dict:
    """The summary of a finished cell, read from its folder."""
    folder = cell.folder(bench_out)
    record = cell_record(folder)
    summary = {
        "version": SUMMARY_VERSION, "id": cell.id, "kind": cell.kind, "dataset": cell.dataset, "bridge": cell.bridge,
        "seed": cell.seed, "queries": cell.queries, "settings": list(cell.settings), "depends": list(cell.depends),
        "record": numbers_only({k: v for k, v in record.items() if k not in ("id", "kind", "dataset", "settings", "depends")}) or {},
        "status": record.get("status"),
    }
    data = DATA_IDENTITY.search(cell.identity)
    if data:  # what a report rebuilt where the dataset is not prepared keys the cells with
        summary["data_identity"] = data.group()
    if cell.kind in ("stage1", "stage2"):
        summary["metrics"] = numbers_only(without_examples(read_json(folder / "run" / "metrics.json"))) or {}
        summary["curve"] = [row for row in (numbers_only(r) for r in read_jsonl(folder / "run" / "metrics.jsonl")) if row]
    if cell.kind == "stage2":
        summary["per_example"] = per_example_numbers(read_json(folder / "run" / "per_example.json"))
        if cell.depends:  # the stage-1 model it read: on a fresh clone a re-run, not the committed one
            summary["stage1_read"] = stage1_reading(bench_out / "cells" / cell.depends[0])
    if cell.kind in ("references", "floors"):
        summary["result"] = numbers_only(read_json(folder / RESULT_FILE[cell.kind])) or {}
    return summary


class SummaryStore:
    """The folder of cell summaries: `<folder>/<dataset>/<kind>-<label>-<key>.json`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, cell: Cell) -> Path:
        return self.folder / f"{cell.id}.json"

    def has(self, cell: Cell) -> bool:
        return self.path(cell).exists()

    def read(self, cell: Cell) -> dict:
        path = self.path(cell)
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"unreadable cell summary ({type(error).__name__}); delete it to run the cell again", path=path) from None
        if not isinstance(summary, dict) or summary.get("version") != SUMMARY_VERSION or summary.get("id") != cell.id:
            raise InputError(f"not a version-{SUMMARY_VERSION} summary of cell {cell.id}; delete it to run the cell again", path=path)
        return summary

    def write(self, cell: Cell, bench_out: Path) -> dict:
        """Summarize a finished cell into the store (atomically); returns the summary."""
        summary = summarize(cell, bench_out)
        atomic_write_text(self.path(cell), json.dumps(summary, separators=(",", ":"), allow_nan=False) + "\n")
        return summary

    def collect(self, cells: list[Cell], bench_out: Path) -> int:
        """Summarize every finished cell that has no summary yet (a grid run before summaries
        existed, or one interrupted between a cell's end and its summary); returns how many."""
        written = 0
        for cell in cells:
            if not self.has(cell) and is_done(cell, bench_out):
                self.write(cell, bench_out)
                written += 1
        return written
