"""Tables the command line and the demo print (rich), in one place both import."""

from __future__ import annotations

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
    table = Table(title=title)
    for column in ("task", "prompts", "metric", "value", "held-out", "n"):
        table.add_column(column, justify="right" if column in ("value", "held-out", "n") else "left", no_wrap=True)
    for task, by_prompt in report.items():
        if task == "ranking_mode":  # one block for every test user, not per prompt set
            for name in ("ranking_mode", "retriever"):
                m = by_prompt[name]
                table.add_row(f"ranking ({name.replace('_', ' ')})", "all users", "HR/NDCG@10", f"{m['HR@10']:.3f}/{m['NDCG@10']:.3f}", "", str(by_prompt["users"]))
            continue
        for prompt_set, m in by_prompt.items():
            if "SC" in m:
                held = m.get("SC_text_held_out")
                table.add_row(task, prompt_set, "SC", f"{m['SC']:.3f}", "" if held is None else f"{held:.3f}", str(m["n"]))
                if "names_title" in m:
                    held = m.get("names_title_text_held_out")
                    table.add_row(task, prompt_set, "names_title", f"{m['names_title']:.3f}", "" if held is None else f"{held:.3f}", str(m["n"]))
            else:
                table.add_row(task, prompt_set, "HR/NDCG@10", f"{m['HR@10']:.3f}/{m['NDCG@10']:.3f}", "", str(m["n"]))
    return table
