"""The summarized cells of one dataset, read into the numbers every report table draws on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from itemlm.bench.grid import Cell
from itemlm.bench.records import read_json
from itemlm.bench.summaries import SummaryStore, trained_llm_type
from itemlm.bench.stats import aligned_keys, mean_std
from itemlm.eval.stage2_eval import RANKED_TASKS

DEFAULT_QUERIES = 8
TEXT_METRICS = ("SC (text tasks)", "SC (text-held-out subjects)", "HR@10 (recommendation)", "HR@10 (ranking mode)")
RANKING_MODE = "ranking_mode"  # per_example: one flat record, a row per user (not per prompt set)


def stage2_summary(metrics: dict, per_example: dict) -> dict:
    """Flat numbers of one stage-2 cell: SC per task (both prompt sets pooled), macro averages, HR/NDCG."""
    summary: dict = {}
    sc_tasks, held_tasks, seen_tasks, nll_tasks = [], [], [], []
    for task, by_set in per_example.items():
        records = list(by_set.values())
        if task == RANKING_MODE or "SC" not in records[0]:
            continue
        scores = np.concatenate([r["SC"] for r in records])
        held = np.concatenate([r["text_held_out"] for r in records]).astype(bool)
        summary[f"SC/{task}"] = float(scores.mean())
        sc_tasks.append(summary[f"SC/{task}"])
        summary[f"NLL/{task}"] = float(np.mean(np.concatenate([r["reference_nll"] for r in records])))
        nll_tasks.append(summary[f"NLL/{task}"])
        if "names_title" in records[0]:  # item_title: the title said in the answer
            named = np.concatenate([r["names_title"] for r in records]).astype(float)
            for group, rows in (("seen", ~held), ("held", held)):
                if rows.any():
                    summary[f"names_title_{group}"] = float(named[rows].mean())
        if held.any():
            summary[f"SC_held/{task}"] = float(scores[held].mean())
            held_tasks.append(summary[f"SC_held/{task}"])
        if (~held).any():
            summary[f"SC_seen/{task}"] = float(scores[~held].mean())
            seen_tasks.append(summary[f"SC_seen/{task}"])
    if sc_tasks:
        summary["SC/avg"] = float(np.mean(sc_tasks))
        summary["NLL/avg"] = float(np.mean(nll_tasks))
    if held_tasks:
        summary["SC_held/avg"] = float(np.mean(held_tasks))
    if seen_tasks:
        summary["SC_seen/avg"] = float(np.mean(seen_tasks))
    for order, values in metrics.get("test", {}).get(RANKING_MODE, {}).items():  # "ranking_mode" and "retriever"
        if not isinstance(values, dict):  # the settings beside them (candidates, ...)
            continue
        for name in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "users"):
            if name in values:
                summary[f"{RANKING_MODE}/{order}/{name}"] = values[name]
    for task in RANKED_TASKS:
        for prompt_set, values in metrics.get("test", {}).get(task, {}).items():
            for name in ("HR@5", "NDCG@5", "HR@10", "NDCG@10"):
                summary[f"{task}/{prompt_set}/{name}"] = values[name]
    return summary


def per_example_scores(per_example: dict) -> dict[str, dict[str, float]]:
    """Metric name -> {example key: score}, the inputs of the paired comparisons."""
    scores: dict[str, dict[str, float]] = {name: {} for name in TEXT_METRICS}
    for task, by_set in per_example.items():
        if task == RANKING_MODE:
            scores["HR@10 (ranking mode)"] = {f"user={u}": float(r < 10) for u, r in zip(by_set["user"], by_set["rank_ranking_mode"])}
            continue
        for prompt_set, records in by_set.items():
            keys = [f"{prompt_set}|{k}" for k in records["key"]]
            if "SC" in records:
                scores["SC (text tasks)"].update(zip(keys, records["SC"]))
                held = {k: v for k, v, h in zip(keys, records["SC"], records["text_held_out"]) if h}
                scores["SC (text-held-out subjects)"].update(held)
            else:
                scores["HR@10 (recommendation)"].update((k, float(r < 10)) for k, r in zip(keys, records["rank"]))
    return scores


def subject_of(key: str) -> str:
    """The subject an example is about, from its key: "item=4" for the item tasks, "user=12" for a user's
    profile, recommendations and ranking (examples about one subject are one cluster in the paired tests)."""
    fields = dict(part.split("=", 1) for part in key.split("|") if "=" in part)
    return f"item={fields['item']}" if fields.get("item", "None") != "None" else f"user={fields.get('user')}"


def paired_by_subject(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two models' scores on the examples both answered, matched by key (`align`'s order), and the subject of each."""
    keys, x, y = aligned_keys(a, b)
    return x, y, [subject_of(k) for k in keys]


def seed_average(score_sets: list[dict[str, float]]) -> dict[str, float]:
    """Per example, the mean over seeds (examples every seed answered)."""
    keys = set.intersection(*(set(s) for s in score_sets)) if score_sets else set()
    return {k: float(np.mean([s[k] for s in score_sets])) for k in keys}


class DatasetResults:
    """The summarized cells of one dataset, indexed by (bridge, queries, seed)."""

    def __init__(self, dataset: str, cells: list[Cell], store: SummaryStore, out: Path):
        self.dataset = dataset
        self.out = out  # the bench folder: generated text is read from its cell folders when they are here
        done = [c for c in cells if c.dataset == dataset and store.has(c)]
        self.cell_summaries = {c.id: store.read(c) for c in done}
        self.stage1 = {(c.bridge, c.queries, c.seed): c for c in done if c.kind == "stage1"}
        self.stage2 = {(c.bridge, c.queries, c.seed): c for c in done if c.kind == "stage2"}
        by_kind = {c.kind: c for c in done if c.kind in ("references", "floors")}
        self.references = self.cell_summaries[by_kind["references"].id]["result"] if "references" in by_kind else {}
        self.floors = self.cell_summaries[by_kind["floors"].id]["result"] if "floors" in by_kind else {}
        self.per_example = {key: self.cell_summaries[c.id]["per_example"] for key, c in self.stage2.items()}
        self.summaries = {key: stage2_summary(self.cell_summaries[c.id]["metrics"], self.per_example[key]) for key, c in self.stage2.items()}

    def curve(self, cell: Cell) -> list[dict]:
        """The cell's metrics.jsonl rows (training losses and validation points), numbers only."""
        return self.cell_summaries[cell.id].get("curve", [])

    def generated(self, cell: Cell) -> dict:
        """The stage-2 cell's per-example records with the generated text, when its folder is here; else {}."""
        return read_json(cell.folder(self.out) / "run" / "per_example.json")

    def runs(self, bridge: str, queries: int = DEFAULT_QUERIES) -> list[tuple]:
        """(bridge, queries, seed) keys of the finished stage-2 cells (MLP and text-only cells carry the default)."""
        return sorted(key for key in self.stage2 if key[0] == bridge and key[1] == queries)

    def aggregate(self, bridge: str, queries: int = DEFAULT_QUERIES) -> dict[str, tuple[float, float, int]]:
        """metric -> (mean, std over seeds, seeds)."""
        runs = [self.summaries[key] for key in self.runs(bridge, queries)]
        names = sorted({name for summary in runs for name in summary})
        return {name: (*mean_std([s.get(name) for s in runs]), len(runs)) for name in names}

    def llm_type(self, bridge: str, queries: int = DEFAULT_QUERIES) -> str:
        """The float type the bridge's cells trained their LLM in ("bfloat16", "float32", both joined by "+"
        across seeds; "-" for a cell that did not record it), so a comparison can say when its two sides differ."""
        return "+".join(sorted({trained_llm_type(self.cell_summaries[self.stage2[key].id]) for key in self.runs(bridge, queries)}))

    def stage1_metric(self, variant: str, queries: int, group: str) -> tuple[float, float, int]:
        """Stage-1 i2t recall@10 on a subject group: (mean, std over seeds, seeds)."""
        values = [self.cell_summaries[c.id]["metrics"].get(group, {}).get("i2t_recall@10")
                  for (b, q, _), c in self.stage1.items() if b == variant and q == queries]
        return (*mean_std(values), len(values))

    def scores(self, bridge: str, queries: int = DEFAULT_QUERIES) -> dict[str, dict[str, float]]:
        """Metric -> example -> score averaged over the bridge's seeds."""
        sets = [per_example_scores(self.per_example[key]) for key in self.runs(bridge, queries)]
        return {metric: seed_average([s[metric] for s in sets]) for metric in TEXT_METRICS} if sets else {}

    def text_tasks(self) -> list[str]:
        """The text tasks any finished stage-2 cell was scored on, in the order first met."""
        tasks = []
        for summary in self.summaries.values():
            tasks += [k.split("/", 1)[1] for k in summary if k.startswith("SC/") and k != "SC/avg" and k.split("/", 1)[1] not in tasks]
        return tasks
