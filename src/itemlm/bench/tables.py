"""The report's tables: SC per task, recommendation, ablations, example generations, cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from itemlm.bench.grid import PRETRAINED_BRIDGES, BenchConfig, Cell
from itemlm.bench.markdown import fmt, table
from itemlm.bench.records import cell_record
from itemlm.bench.summaries import SummaryStore, trained_llm_type, trie_generation_seconds
from itemlm.bench.references import NAMES as REFERENCE_NAMES
from itemlm.bench.results import DatasetResults
from itemlm.eval.stage2_eval import RANKED_TASKS

ABLATION_HEADER = ["model", "stage-1 i2t R@10, text-seen", "stage-1 i2t R@10, text-held-out", "SC avg", "SC avg, text-held-out", "sequential HR@10", "straightforward HR@10"]


def sc_section(results: DatasetResults, config: BenchConfig) -> tuple[str, dict]:
    """The SC-per-task text (explanation and table, floors included) and its numbers for results.json."""
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


def primary_headline(results: DatasetResults, config: BenchConfig, task: str = "item_description") -> str:
    """The learning issue's two bars for the primary ILM, said before any table: above the text-only
    LLM on text-seen subjects, above the CF neighbour's reference on text-held-out ones ("" without numbers).

    The bars are read on `task`; a dataset without it (Beauty has no descriptions) is read on the mean
    over the item tasks that have both numbers, named in the line."""
    label = config.claimed(config.primary)
    primary, baseline = results.aggregate(label), results.aggregate("text-only")
    if not primary:
        return ""
    pooled = not any(f"SC_{side}/{task}" in primary for side in ("seen", "held"))
    tasks = sorted(results.text_tasks()) if pooled else [task]
    neighbour = {t: (results.floors.get(t, {}).get("CF neighbour's reference") or {}).get("SC_text_held_out") for t in tasks}
    seen_tasks = [t for t in tasks if f"SC_seen/{t}" in primary and f"SC_seen/{t}" in baseline]
    held_tasks = [t for t in tasks if f"SC_held/{t}" in primary and neighbour[t] is not None]
    parts = []
    if seen_tasks:
        subjects = "text-seen subjects" + (f" ({', '.join(seen_tasks)})" if pooled else "")
        parts.append(bar_clause(subjects, task_mean(primary, "SC_seen", seen_tasks),
                                "the text-only LLM's", task_mean(baseline, "SC_seen", seen_tasks)))
    if held_tasks:
        subjects = "text-held-out subjects" + (f" ({', '.join(held_tasks)})" if pooled else "")
        parts.append(bar_clause(subjects, task_mean(primary, "SC_held", held_tasks),
                                "the CF neighbour's reference", float(np.mean([neighbour[t] for t in held_tasks]))))
    subject = "SC averaged over item tasks" if pooled else f"{task} SC"
    return f"**The primary ILM ({label}), {subject}:** " + "; ".join(parts) + "." if parts else ""


def task_mean(aggregate: dict, prefix: str, tasks: list[str]) -> tuple | float:
    """A model's seed-averaged SC on one task (mean, std, seeds), or the mean of its means over several."""
    if len(tasks) == 1:
        return aggregate[f"{prefix}/{tasks[0]}"]
    return float(np.mean([aggregate[f"{prefix}/{t}"][0] for t in tasks]))


def bar_clause(subjects: str, value: tuple | float, bar_name: str, bar: tuple | float) -> str:
    """One bar's clause, e.g. `text-held-out subjects 0.348 vs the CF neighbour's reference 0.456 (**below**)`."""
    return f"{subjects} {fmt(value)} vs {bar_name} {fmt(bar)} ({'above' if mean_value(value) > mean_value(bar) else '**below**'})"


def mean_value(value: tuple | float) -> float:
    """A seed-averaged (mean, std, seeds) tuple's mean, or the number itself."""
    return value[0] if isinstance(value, tuple) else value


def subjects_section(results: DatasetResults, config: BenchConfig) -> str:
    """names_title and SC per task split by subject: text-seen / text-held-out (the learning issue's bars)."""
    tasks = results.text_tasks()
    header = ["model", "names_title, text-seen", "names_title, text-held-out", *[f"{t} (seen / held-out)" for t in tasks]]
    rows = []
    for bridge in config.bridges:
        agg = results.aggregate(bridge)
        if agg:
            rows.append([bridge, fmt(agg.get("names_title_seen")), fmt(agg.get("names_title_held")),
                         *[f"{fmt(agg.get(f'SC_seen/{t}'))} / {fmt(agg.get(f'SC_held/{t}'))}" for t in tasks]])
    neighbour = "CF neighbour's reference"
    cells = [results.floors.get(t, {}).get(neighbour) for t in tasks]
    if any(cells):
        rows.append([f"*floor: {neighbour}*", "", "", *[
            f"{fmt(c.get('SC_text_seen', c['SC']))} / {fmt(c.get('SC_text_held_out'))}" if c else "n/a" for c in cells]])
    return ("names_title: share of item_title answers that contain the item's title. SC per task on text-seen "
            "and on text-held-out subjects (items whose text no training step read), both prompt sets pooled, "
            "mean over seeds.\n\n" + table(header, rows)) if rows else ""


def ranking_section(results: DatasetResults, config: BenchConfig) -> tuple[str, dict]:
    """One HR/NDCG table per ranked task (models, then references on the same users) and its numbers."""
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
            everyone = int(ref["metrics"]["users"])
            if len(users) != everyone:  # the LLMs were scored on a subset: the reference on that subset first
                rows.append([f"{REFERENCE_NAMES[name]} (same users)", *[fmt(same.get(m), 4) for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")], "", "", str(len(users))])
            rows.append([f"{REFERENCE_NAMES[name]} (all {everyone} test users)",
                         *[fmt(ref["metrics"][m], 4) for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")], "", "", str(everyone)])
            data.setdefault(task, {})[name] = {"same_users": same, "all_users": {k: ref["metrics"][k] for k in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")}}
        parts.append(f"**{task}** (test split, leave-one-out, full catalogue, constrained beam search for the LLMs)\n\n" + table(header, rows))
    rows = []
    for bridge in config.bridges:
        agg = results.aggregate(bridge)
        for order, name in (("ranking_mode", f"{bridge}: ranking mode"), ("retriever", f"{bridge}: its retriever alone")):
            if f"ranking_mode/{order}/HR@10" in agg:
                rows.append([name, *[fmt(agg.get(f"ranking_mode/{order}/{m}"), 4) for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")],
                             fmt(agg.get(f"ranking_mode/{order}/users"), 0)])
                data.setdefault("ranking_mode", {}).setdefault(bridge, {})[order] = {
                    k.rsplit("/", 1)[1]: v[:2] for k, v in agg.items() if k.startswith(f"ranking_mode/{order}/")}
    if rows:
        parts.append("**ranking mode** (the retriever's candidates ordered by the frozen LLM, the rest of the catalogue after "
                     "them; the test users the `users` column counts)\n\n" + table(["model", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "users"], rows))
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
    """A reference recommender's HR/NDCG@5/10 on the given users only ({} when it ranked none of them)."""
    rank = dict(zip(reference["users"], reference["ranks"]))
    ranks = np.array([rank[u] for u in users if u in rank])
    if len(ranks) == 0:
        return {}
    hit5, hit10 = ranks < 5, ranks < 10
    gain = 1.0 / np.log2(ranks + 2.0)
    return {"HR@5": float(hit5.mean()), "NDCG@5": float((gain * hit5).mean()), "HR@10": float(hit10.mean()), "NDCG@10": float((gain * hit10).mean())}


def ablation_rows(results: DatasetResults, config: BenchConfig, entries: list[tuple[str, str, int]]) -> list[list[str]]:
    """Rows under ABLATION_HEADER, one per finished (label, bridge, queries) entry; a variant's stage-1
    recall is its bridge's (ilm-it-ii-frozen reads the ilm-it-ii stage-1 cells)."""
    rows = []
    for label, bridge, queries in entries:
        agg = results.aggregate(bridge, queries)
        if not agg:
            continue
        base = config.base_bridge(bridge)
        s1 = [results.stage1_metric(base, queries, g) for g in ("text_seen", "text_held_out")] if base in PRETRAINED_BRIDGES else [None, None]
        rows.append([label, *[fmt(v) for v in s1], fmt(agg.get("SC/avg")), fmt(agg.get("SC_held/avg")),
                     fmt(agg.get("sequential/seen/HR@10"), 4), fmt(agg.get("straightforward/seen/HR@10"), 4)])
    return rows


def stage1_rerun_notes(results: DatasetResults) -> list[str]:
    """One line per stage-2 cell that read a stage-1 model other than its committed summary's (a
    re-run on a fresh clone: stage-1 training is not bit-reproducible across machines); the stage-1
    recall in the ablation tables is the committed one's."""
    lines = []
    for cell in results.stage2.values():
        read = results.cell_summaries[cell.id].get("stage1_read")
        committed = results.cell_summaries.get(cell.depends[0], {}).get("metrics", {}) if cell.depends else {}
        if not read or not committed:
            continue
        pairs = [(group, read.get(group, {}).get("i2t_recall@10"), committed.get(group, {}).get("i2t_recall@10"))
                 for group in ("text_seen", "text_held_out")]
        if all(a is None or b is None or abs(a - b) < 1e-9 for _, a, b in pairs):
            continue
        said = ", ".join(f"{group.replace('_', '-')} {fmt(a)} (committed {fmt(b)})" for group, a, b in pairs if a is not None and b is not None)
        lines.append(f"- `{cell.id}` read a re-run of `{cell.depends[0]}`, not the model of its committed summary "
                     f"(stage-1 training is not bit-reproducible across machines): i2t recall@10 {said}.")
    return lines


def examples_section(results: DatasetResults, config: BenchConfig, task: str = "item_description") -> str:
    """What each model wrote about the first text-held-out subject of a task (first seed); "" when none did."""
    chosen_task = task if task in results.text_tasks() else next(iter(results.text_tasks()), None)
    rows, reference = [], None
    for bridge in config.bridges:
        runs = results.runs(bridge)
        if not runs or chosen_task is None:
            continue
        records = results.generated(results.stage2[runs[0]]).get(chosen_task, {}).get("seen")
        if not records:  # a cell summarized elsewhere: its text stays out of the committed summary
            continue
        held = [k for k, h in enumerate(records["text_held_out"]) if h] or [0]
        k = held[0]
        reference = reference or records["key"][k]
        rows.append([bridge, records["generated"][k].replace("|", "/").replace("\n", " "), f"{records['SC'][k]:.3f}"])
    if not rows:
        return ""
    return f"Generations for `{chosen_task}` on one text-held-out subject ({reference}):\n\n" + table(["model", "generated", "SC"], rows)


def cells_section(cells: list[Cell], out: Path, store: SummaryStore) -> tuple[str, list[dict], float]:
    """The table of every planned cell's status, time and memory; the same as dicts; seconds summed over done cells."""
    rows, data, total = [], [], 0.0
    for cell in cells:
        summary = store.read(cell) if store.has(cell) else None
        record = summary["record"] if summary else cell_record(cell.folder(out))
        metrics = (summary.get("metrics") or {}) if summary else {}
        train = metrics.get("train", {})
        status = "done" if summary else record.get("status", "not run")
        if status == "done":
            total += record.get("seconds", 0.0)
        llm_type = trained_llm_type(summary) if summary else "-"
        trie = trie_generation_seconds(summary) if summary else None
        rows.append([cell.id, status, fmt(record.get("seconds"), 0), fmt(train.get("train_seconds"), 0), fmt(metrics.get("eval_seconds"), 0),
                     fmt(trie, 0), llm_type, fmt(record.get("peak_rss_gb"), 2)])
        data.append({"id": cell.id, "status": status, "seconds": record.get("seconds"), "train_seconds": train.get("train_seconds"),
                     "eval_seconds": metrics.get("eval_seconds"), "trie_generation_seconds": trie,
                     "llm_bfloat16": train.get("llm_bfloat16"), "peak_rss_gb": record.get("peak_rss_gb")})
    header = ["cell", "status", "seconds", "training seconds", "evaluation seconds", "of which trie generation", "LLM trained in", "peak RSS (GB)"]
    return table(header, rows), data, total
