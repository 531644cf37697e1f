"""From finished bench cells to `results.json`, `report.md` and PNG plots.

Everything here reads cell folders only, so a report can be rebuilt at any time (`itemlm bench
--report-only`), including from a grid that is still running: missing cells show as "-".
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from itemlm.bench.grid import PRETRAINED_BRIDGES, BenchConfig, Cell, plan_cells
from itemlm.bench.references import NAMES as REFERENCE_NAMES
from itemlm.bench.runner import cell_record, is_done
from itemlm.bench.stats import align, mean_std, paired_bootstrap
from itemlm.eval.stage2_eval import RANKED_TASKS
from itemlm.io import atomic_write_text

DEFAULT_QUERIES = 8
TEXT_METRICS = ("SC (text tasks)", "SC (text-held-out subjects)", "HR@10 (recommendation)")


# ------------------------------------------------------------------ reading cells
def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def stage2_summary(metrics: dict, per_example: dict) -> dict:
    """Flat numbers of one stage-2 cell: SC per task (both prompt sets pooled), macro averages, HR/NDCG."""
    summary: dict = {}
    sc_tasks, held_tasks, seen_tasks, nll_tasks = [], [], [], []
    for task, by_set in per_example.items():
        records = list(by_set.values())
        if "SC" not in records[0]:
            continue
        scores = np.concatenate([r["SC"] for r in records])
        held = np.concatenate([r["text_held_out"] for r in records]).astype(bool)
        summary[f"SC/{task}"] = float(scores.mean())
        sc_tasks.append(summary[f"SC/{task}"])
        summary[f"NLL/{task}"] = float(np.mean(np.concatenate([r["reference_nll"] for r in records])))
        nll_tasks.append(summary[f"NLL/{task}"])
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
    for task in RANKED_TASKS:
        for prompt_set, values in metrics.get("test", {}).get(task, {}).items():
            for name in ("HR@5", "NDCG@5", "HR@10", "NDCG@10"):
                summary[f"{task}/{prompt_set}/{name}"] = values[name]
    return summary


def per_example_scores(per_example: dict) -> dict[str, dict[str, float]]:
    """Metric name -> {example key: score}, the inputs of the paired bootstrap."""
    scores: dict[str, dict[str, float]] = {name: {} for name in TEXT_METRICS}
    for by_set in per_example.values():
        for prompt_set, records in by_set.items():
            keys = [f"{prompt_set}|{k}" for k in records["key"]]
            if "SC" in records:
                scores["SC (text tasks)"].update(zip(keys, records["SC"]))
                held = {k: v for k, v, h in zip(keys, records["SC"], records["text_held_out"]) if h}
                scores["SC (text-held-out subjects)"].update(held)
            else:
                scores["HR@10 (recommendation)"].update((k, float(r < 10)) for k, r in zip(keys, records["rank"]))
    return scores


def seed_average(score_sets: list[dict[str, float]]) -> dict[str, float]:
    """Per example, the mean over seeds (examples every seed answered)."""
    keys = set.intersection(*(set(s) for s in score_sets)) if score_sets else set()
    return {k: float(np.mean([s[k] for s in score_sets])) for k in keys}


class DatasetResults:
    """The finished cells of one dataset, indexed by (bridge, queries, seed)."""

    def __init__(self, dataset: str, cells: list[Cell], out: Path):
        self.dataset = dataset
        self.out = out
        done = [c for c in cells if c.dataset == dataset and is_done(c, out)]
        self.stage1 = {(c.bridge, c.queries, c.seed): c for c in done if c.kind == "stage1"}
        self.stage2 = {(c.bridge, c.queries, c.seed): c for c in done if c.kind == "stage2"}
        by_kind = {c.kind: c for c in done if c.kind in ("references", "floors")}
        self.references = read_json(by_kind["references"].folder(out) / "result.json") if "references" in by_kind else {}
        self.floors = read_json(by_kind["floors"].folder(out) / "result.json") if "floors" in by_kind else {}
        # each stage-2 cell's per-example records are read once: every table below draws on them
        self.per_example = {key: read_json(c.folder(out) / "run" / "per_example.json") for key, c in self.stage2.items()}
        self.summaries = {
            key: stage2_summary(read_json(c.folder(out) / "run" / "metrics.json"), self.per_example[key]) for key, c in self.stage2.items()
        }

    def runs(self, bridge: str, queries: int = DEFAULT_QUERIES) -> list[tuple]:
        """(bridge, queries, seed) keys of the finished stage-2 cells (MLP and text-only cells carry the default)."""
        return sorted(key for key in self.stage2 if key[0] == bridge and key[1] == queries)

    def aggregate(self, bridge: str, queries: int = DEFAULT_QUERIES) -> dict[str, tuple[float, float, int]]:
        """metric -> (mean, std over seeds, seeds)."""
        runs = [self.summaries[key] for key in self.runs(bridge, queries)]
        names = sorted({name for summary in runs for name in summary})
        return {name: (*mean_std([s.get(name) for s in runs]), len(runs)) for name in names}

    def stage1_metric(self, variant: str, queries: int, group: str) -> tuple[float, float, int]:
        values = [read_json(c.folder(self.out) / "run" / "metrics.json").get(group, {}).get("i2t_recall@10")
                  for (b, q, _), c in self.stage1.items() if b == variant and q == queries]
        return (*mean_std(values), len(values))

    def scores(self, bridge: str, queries: int = DEFAULT_QUERIES) -> dict[str, dict[str, float]]:
        """Metric -> example -> score averaged over the bridge's seeds."""
        sets = [per_example_scores(self.per_example[key]) for key in self.runs(bridge, queries)]
        return {metric: seed_average([s[metric] for s in sets]) for metric in TEXT_METRICS} if sets else {}

    def text_tasks(self) -> list[str]:
        tasks = []
        for summary in self.summaries.values():
            tasks += [k.split("/", 1)[1] for k in summary if k.startswith("SC/") and k != "SC/avg" and k.split("/", 1)[1] not in tasks]
        return tasks


# ------------------------------------------------------------------ formatting
def fmt(value: tuple | float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        mean, std, n = value
        if n == 0 or not np.isfinite(mean):
            return "-"
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def p_text(p: float, resamples: int) -> str:
    return f"< {1 / resamples:.4f}" if p <= 1 / resamples else f"{p:.4f}"


# ------------------------------------------------------------------ sections
def sc_section(results: DatasetResults, config: BenchConfig) -> tuple[str, dict]:
    tasks = results.text_tasks()
    header = ["model", *tasks, "avg", "avg, text-seen subjects", "avg, text-held-out subjects", "reference NLL (nats/token)"]
    rows, data = [], {}
    for bridge in config.bridges:
        agg = results.aggregate(bridge)
        if not agg:
            continue
        data[bridge] = {k: v[:2] for k, v in agg.items()}
        rows.append([f"{bridge} ({agg['SC/avg'][2]} seed{'s' if agg['SC/avg'][2] > 1 else ''})", *[fmt(agg.get(f"SC/{t}")) for t in tasks],
                     fmt(agg.get("SC/avg")), fmt(agg.get("SC_seen/avg")), fmt(agg.get("SC_held/avg")), fmt(agg.get("NLL/avg"), 2)])
    floor_names = []
    for task_floors in results.floors.values():
        floor_names += [name for name in task_floors if name not in floor_names]
    for name in floor_names:
        per_task = {t: results.floors.get(t, {}).get(name) for t in tasks}
        values = [v["SC"] for v in per_task.values() if v]
        held = [v["SC_text_held_out"] for v in per_task.values() if v and "SC_text_held_out" in v]
        seen = [v.get("SC_text_seen", v["SC"]) for v in per_task.values() if v]
        rows.append([f"*floor: {name}*", *[fmt(v["SC"]) if v else "n/a" for v in per_task.values()],
                     *[fmt(float(np.mean(x))) if x else "-" for x in (values, seen, held)], ""])
    text = (
        "SC: cosine similarity between generated and reference text under the sentence encoder, per task "
        "(seen and unseen prompts pooled), mean ± std over seeds; 'avg' is the mean over tasks (for a floor, over "
        "the tasks where it is defined, so compare floors task by task). Floors and "
        "ceilings (italic) are trivial answers scored on the same examples by the same encoder; on "
        "text-held-out subjects the CF neighbour's reference is the bar to clear. The text-only model reads "
        "every item's title in its prompt, so for it 'text-held-out' only means that no bridge was trained "
        "on the item's text (it has no bridge).\n\n" + table(header, rows)
    )
    return text, {"models": data, "floors": results.floors}


def ranking_section(results: DatasetResults, config: BenchConfig) -> tuple[str, dict]:
    parts, data = [], {}
    for task in RANKED_TASKS:
        header = ["model", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "unseen prompt HR@10", "unseen prompt NDCG@10", "users"]
        rows = []
        for bridge in config.bridges:
            agg = results.aggregate(bridge)
            if f"{task}/seen/HR@10" not in agg:
                continue
            users = len(evaluated_users(results, task, bridge))
            rows.append([bridge, *[fmt(agg.get(f"{task}/seen/{m}"), 4) for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")],
                         fmt(agg.get(f"{task}/unseen/HR@10"), 4), fmt(agg.get(f"{task}/unseen/NDCG@10"), 4), str(users)])
            data.setdefault(task, {})[bridge] = {k.split("/", 1)[1]: v[:2] for k, v in agg.items() if k.startswith(f"{task}/")}
        users = evaluated_users(results, task)
        for name, ref in results.references.items():
            same = same_user_metrics(ref, users)
            rows.append([f"{REFERENCE_NAMES[name]} (same users)", *[fmt(same.get(m), 4) for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")], "", "", str(len(users))])
            rows.append([f"{REFERENCE_NAMES[name]} (all {int(ref['metrics']['users'])} test users)",
                         *[fmt(ref["metrics"][m], 4) for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")], "", "", str(int(ref["metrics"]["users"]))])
            data.setdefault(task, {})[name] = {"same_users": same, "all_users": {k: ref["metrics"][k] for k in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")}}
        parts.append(f"**{task}** (test split, leave-one-out, full catalogue, constrained beam search for the LLMs)\n\n" + table(header, rows))
    return "\n\n".join(parts), data


def evaluated_users(results: DatasetResults, task: str, bridge: str | None = None) -> list[int]:
    """The users a ranked task was evaluated on (seen prompts); the same for every model of a dataset."""
    for key, per_example in results.per_example.items():
        if bridge is not None and key[0] != bridge:
            continue
        records = per_example.get(task, {}).get("seen")
        if records:
            return records["user"]
    return []


def same_user_metrics(reference: dict, users: list[int]) -> dict:
    rank = dict(zip(reference["users"], reference["ranks"]))
    ranks = np.array([rank[u] for u in users if u in rank])
    if len(ranks) == 0:
        return {}
    hit5, hit10 = ranks < 5, ranks < 10
    gain = 1.0 / np.log2(ranks + 2.0)
    return {"HR@5": float(hit5.mean()), "NDCG@5": float((gain * hit5).mean()), "HR@10": float(hit10.mean()), "NDCG@10": float((gain * hit10).mean())}


def ablation_rows(results: DatasetResults, entries: list[tuple[str, str, int]]) -> list[list[str]]:
    rows = []
    for label, bridge, queries in entries:
        agg = results.aggregate(bridge, queries)
        if not agg:
            continue
        s1 = [results.stage1_metric(bridge, queries, g) for g in ("text_seen", "text_held_out")] if bridge in PRETRAINED_BRIDGES else [None, None]
        rows.append([label, *[fmt(v) for v in s1], fmt(agg.get("SC/avg")), fmt(agg.get("SC_held/avg")),
                     fmt(agg.get("sequential/seen/HR@10"), 4), fmt(agg.get("straightforward/seen/HR@10"), 4)])
    return rows


ABLATION_HEADER = ["model", "stage-1 i2t R@10, text-seen", "stage-1 i2t R@10, text-held-out", "SC avg", "SC avg, text-held-out", "sequential HR@10", "straightforward HR@10"]


def comparison_section(results: DatasetResults, config: BenchConfig) -> tuple[str, list[dict]]:
    pairs = [(config.primary, other, DEFAULT_QUERIES, DEFAULT_QUERIES) for other in config.compare_with]
    for variant in ("ilm-it-ii", "ilm-it-ui", "ilm-it-ii-ui"):
        if variant in config.bridges and "ilm-it" in config.bridges:
            pairs.append((variant, "ilm-it", DEFAULT_QUERIES, DEFAULT_QUERIES))
    sweep = sorted({q for (b, q, _) in results.stage2 if b == config.sweep_variant})
    if 1 in sweep and len(sweep) > 1:
        best = DEFAULT_QUERIES if DEFAULT_QUERIES in sweep else sweep[-1]
        pairs.append((config.sweep_variant, config.sweep_variant, best, 1))
    rows, data = [], []
    for a, b, qa, qb in pairs:
        scores_a, scores_b = results.scores(a, qa), results.scores(b, qb)
        if not scores_a or not scores_b:
            continue
        # a bridge against itself is a query-count comparison: name the counts
        name_a, name_b = (f"{a} ({qa} queries)", f"{b} ({qb} query)") if a == b else (a, b)
        for metric in TEXT_METRICS:
            x, y = align(scores_a[metric], scores_b[metric])
            if len(x) == 0:
                continue
            result = paired_bootstrap(x, y, resamples=config.bootstrap_resamples, seed=0)
            data.append({"a": name_a, "b": name_b, "metric": metric, **result.to_dict()})
            rows.append([f"{name_a} − {name_b}", metric, f"{result.difference:+.4f}", f"[{result.low:+.4f}, {result.high:+.4f}]",
                         p_text(result.p_value, config.bootstrap_resamples), str(result.examples)])
    header = ["comparison", "metric", "difference", "95% CI", "p", "examples"]
    text = ("Paired bootstrap over evaluation examples (every model answers the same examples; each model's "
            "per-example score is averaged over its seeds first), "
            f"{config.bootstrap_resamples} resamples, two-sided.\n\n" + table(header, rows)) if rows else "No pair of finished models to compare yet."
    return text, data


def verdicts(comparisons: list[dict], config: BenchConfig) -> list[str]:
    """One sentence per paper claim, read off the paired comparisons (never written by hand)."""
    claims = [
        ("Stage-1 pre-training helps (ILM > ILM-rand)", config.primary, "ilm-rand"),
        ("The Q-Former beats a CoLLM-style MLP", config.primary, "mlp"),
        ("Item tokens beat reading titles (ILM > text-only)", config.primary, "text-only"),
        ("The item-item loss helps (ILM-IT-II > ILM-IT)", "ilm-it-ii", "ilm-it"),
        ("The user-item loss helps (ILM-IT-UI > ILM-IT)", "ilm-it-ui", "ilm-it"),
        ("Several query tokens beat one", f"{config.sweep_variant} ({DEFAULT_QUERIES} queries)", f"{config.sweep_variant} (1 query)"),
    ]
    lines = []
    for claim, a, b in claims:
        found = [c for c in comparisons if c["a"] == a and c["b"] == b]
        if not found:
            continue
        parts = []
        for c in found:
            if c["p_value"] < 0.05:
                word = "holds" if c["difference"] > 0 else "reversed"
            else:
                word = "no significant difference"
            parts.append(f"{c['metric']}: {word} ({c['difference']:+.3f}, p {p_text(c['p_value'], config.bootstrap_resamples)})")
        lines.append(f"- **{claim}** — " + "; ".join(parts))
    return lines


def examples_section(results: DatasetResults, config: BenchConfig, task: str = "item_description") -> str:
    """What each model wrote about the first text-held-out subject of a task (first seed)."""
    chosen_task = task if task in results.text_tasks() else next(iter(results.text_tasks()), None)
    rows, reference = [], None
    for bridge in config.bridges:
        runs = results.runs(bridge)
        if not runs or chosen_task is None:
            continue
        records = results.per_example[runs[0]].get(chosen_task, {}).get("seen")
        if not records:
            continue
        held = [k for k, h in enumerate(records["text_held_out"]) if h] or [0]
        k = held[0]
        reference = reference or records["key"][k]
        rows.append([bridge, records["generated"][k].replace("|", "/").replace("\n", " "), f"{records['SC'][k]:.3f}"])
    if not rows:
        return ""
    return f"Generations for `{chosen_task}` on one text-held-out subject ({reference}):\n\n" + table(["model", "generated", "SC"], rows)


# ------------------------------------------------------------------ plots
def plot_sweep(results: DatasetResults, config: BenchConfig, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted({q for (b, q, _) in results.stage2 if b == config.sweep_variant})
    if len(sweep) < 2:
        return False
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for metric, label in (("SC/avg", "SC, all subjects"), ("SC_held/avg", "SC, text-held-out subjects")):
        values = [results.aggregate(config.sweep_variant, q).get(metric, (np.nan, 0, 0)) for q in sweep]
        axis.errorbar(sweep, [v[0] for v in values], yerr=[v[1] for v in values], marker="o", capsize=3, label=label)
    axis.set_xscale("log", base=2)
    axis.set_xticks(sweep, [str(q) for q in sweep])
    axis.set_xlabel("query tokens")
    axis.set_ylabel("SC (avg over text tasks)")
    axis.set_title(f"{results.dataset}: {config.sweep_variant}, SC vs query tokens")
    axis.legend(fontsize=8, loc="best", framealpha=0.6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def plot_curves(results: DatasetResults, config: BenchConfig, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    drawn = False
    for (bridge, queries, seed), cell in sorted(results.stage1.items()):
        if seed == config.seeds[0] and queries == DEFAULT_QUERIES:
            log = read_jsonl(cell.folder(results.out) / "run" / "metrics.jsonl")
            left.plot([r["step"] for r in log], [r["loss"] for r in log], label=bridge)
            drawn = True
    for (bridge, queries, seed), cell in sorted(results.stage2.items(), key=lambda kv: str(kv[0])):
        if seed == config.seeds[0] and queries in (DEFAULT_QUERIES, None):
            log = read_jsonl(cell.folder(results.out) / "run" / "metrics.jsonl")
            if log:
                right.plot([r["step"] for r in log], [r["loss"] for r in log], label=bridge)
                drawn = True
    left.set_title("stage 1: total loss")
    right.set_title("stage 2: next-token loss on targets")
    for axis in (left, right):
        axis.set_xlabel("step")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(f"{results.dataset}: training curves (seed {config.seeds[0]})")
    figure.tight_layout()
    if drawn:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return drawn


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# ------------------------------------------------------------------ the report
def environment() -> dict:
    import torch
    import transformers

    from itemlm import __version__

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "itemlm": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "machine": platform.machine(), "system": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)), "memory_gb": round(memory, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cells_section(cells: list[Cell], out: Path) -> tuple[str, list[dict], float]:
    rows, data, total = [], [], 0.0
    for cell in cells:
        record = cell_record(cell.folder(out))
        status = record.get("status", "not run")
        if status == "done":
            total += record.get("seconds", 0.0)
        rows.append([cell.id, status, fmt(record.get("seconds"), 0), fmt(record.get("peak_rss_gb"), 2)])
        data.append({"id": cell.id, "status": status, "seconds": record.get("seconds"), "peak_rss_gb": record.get("peak_rss_gb")})
    return table(["cell", "status", "seconds", "peak RSS (GB)"], rows), data, total


def write_report(config: BenchConfig, out: Path) -> Path:
    cells = plan_cells(config)
    env = environment()
    sessions = read_jsonl(out / "sessions.jsonl")
    cell_table, cell_data, compute = cells_section(cells, out)
    done = sum(1 for c in cell_data if c["status"] == "done")
    lines = [
        f"# itemlm bench: {config.name}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `itemlm bench`. {done} of {len(cells)} cells finished"
        + ("" if done == len(cells) else " (missing cells show as '-'; run the bench again to finish them)") + ".",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['memory_gb']} GiB, GPU: {env['gpu'] or 'none'}. "
        f"Versions: itemlm {env['itemlm']}, torch {env['torch']}, transformers {env['transformers']}, Python {env['python']}.",
        f"Compute: {compute / 60:.1f} min summed over finished cells; bench wall time {sum(s['wall_seconds'] for s in sessions) / 60:.1f} min over {len(sessions)} session(s).",
        "",
    ]
    results_json: dict = {"config": asdict(config), "environment": env, "sessions": sessions, "datasets": {}, "cells": cell_data}
    for dataset in config.datasets:
        results = DatasetResults(dataset, cells, out)
        if not results.stage2 and not results.references:
            lines += [f"## {dataset}", "", "No finished cells for this dataset.", ""]
            continue
        sc_text, sc_data = sc_section(results, config)
        rank_text, rank_data = ranking_section(results, config)
        variants = [(b, b, DEFAULT_QUERIES) for b in PRETRAINED_BRIDGES if b in config.bridges] + [("ilm-rand", "ilm-rand", DEFAULT_QUERIES)]
        sweep = [(f"{config.sweep_variant}, {q} quer{'y' if q == 1 else 'ies'}", config.sweep_variant, q) for q in config.query_sweep]
        compare_text, compare_data = comparison_section(results, config)
        claims = verdicts(compare_data, config)
        lines += [f"## {dataset}", "", "### SC per task", "", sc_text, "", "### Recommendation (OpenP5-style)", "", rank_text, ""]
        lines += ["### Loss-variant ablation", "", table(ABLATION_HEADER, ablation_rows(results, variants)), ""]
        lines += ["### Query-token ablation", "", table(ABLATION_HEADER, ablation_rows(results, sweep)), ""]
        if plot_sweep(results, config, out / f"sweep-{dataset}.png"):
            lines += [f"![SC vs query tokens](sweep-{dataset}.png)", ""]
        if plot_curves(results, config, out / f"curves-{dataset}.png"):
            lines += [f"![training curves](curves-{dataset}.png)", ""]
        lines += ["### Examples", "", examples_section(results, config), ""]
        lines += ["### Significance", "", compare_text, "", "### The paper's claims here", "", *(claims or ["Not enough finished cells yet."]), ""]
        results_json["datasets"][dataset] = {"sc": sc_data, "recommendation": rank_data, "comparisons": compare_data, "claims": claims}
    lines += ["## Cells", "", cell_table, "", "## Config", "", "```yaml", yaml.safe_dump(asdict(config), sort_keys=False).strip(), "```", ""]
    atomic_write_text(out / "results.json", json.dumps(results_json, indent=2, default=float))
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
