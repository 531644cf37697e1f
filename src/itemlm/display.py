"""Tables the command line and the demo print (rich), in one place both import."""

from __future__ import annotations

from rich import box
from rich.table import Table


def ranking_table(results: dict[str, dict[str, float]], title: str, ks=(1, 5, 10, 20)) -> Table:
    """Full-catalogue HR@K and NDCG@K per model: a row per model and metric, a column per K.

    Metrics as rows keep the table within an 80-column terminal for the four default Ks.
    """
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for k in ks:
        table.add_column(f"@{k}", justify="right", no_wrap=True)
    for model, metrics in results.items():
        for metric in ("HR", "NDCG"):
            values = [f"{metrics[f'{metric}@{k}']:.4f}" for k in ks]
            table.add_row(model if metric == "HR" else "", metric, *values, end_section=metric == "NDCG")
    return table


def stage2_table(report: dict, title: str) -> Table:
    """The stage-2 test report: a text task's value over all its subjects, then over the items whose
    text training read (text-seen) and those it never read (held-out), where the task has both;
    ranked tasks as HR@10 and NDCG@10. Fits an 80-column terminal."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("task", "prompts", "metric", "all", "text-seen", "held-out", "n"):
        table.add_column(column, justify="left" if column in ("task", "prompts", "metric") else "right", no_wrap=True)

    def part(m: dict, key: str) -> str:
        value = m.get(key)
        return "" if value is None or value != value else f"{value:.3f}"

    for task, by_prompt in report.items():
        if task == "ranking_mode":  # one block for every test user, not per prompt set
            for name, label in (("ranking_mode", "ranking mode"), ("retriever", "its retriever")):  # every test user
                for metric in ("HR@10", "NDCG@10"):
                    table.add_row(label, "all", metric, f"{by_prompt[name][metric]:.4f}", "", "", str(by_prompt["users"]))
            continue
        for prompt_set, m in by_prompt.items():
            if "SC" in m:
                table.add_row(task, prompt_set, "SC", f"{m['SC']:.3f}", part(m, "SC_text_seen"), part(m, "SC_text_held_out"), str(m["n"]))
                if "names_title" in m:
                    table.add_row(task, prompt_set, "names_title", f"{m['names_title']:.3f}", part(m, "names_title_text_seen"),
                                  part(m, "names_title_text_held_out"), str(m["n"]))
            else:
                for metric in ("HR@10", "NDCG@10"):
                    table.add_row(task, prompt_set, metric, f"{m[metric]:.4f}", "", "", str(m["n"]))
    return table
