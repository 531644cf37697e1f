"""From finished bench cells to `results.json`, `report.md` and PNG plots.

Everything here reads the cells' summaries (itemlm.bench.summaries), so a report can be rebuilt at
any time (`itemlm bench --report-only`), from a grid that is still running (missing cells show as
"-") or on a fresh clone from committed summaries alone; only the examples of generated text need
the cell folders. The pieces live next door: results.py reads the summaries, tables.py and
significance.py write the sections, plots.py draws, environment.py describes the machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from itemlm.bench.environment import environment
from itemlm.bench.grid import PRETRAINED_BRIDGES, BenchConfig, plan_cells
from itemlm.bench.markdown import table
from itemlm.bench.plots import plot_curves, plot_sweep, plot_time_to_quality
from itemlm.bench.records import read_jsonl
from itemlm.bench.results import DEFAULT_QUERIES, DatasetResults
from itemlm.bench.significance import comparison_section, verdict_lines, verdicts
from itemlm.bench.summaries import SummaryStore
from itemlm.bench.tables import (
    ABLATION_HEADER, ablation_rows, cells_section, examples_section, primary_headline, ranking_section, sc_section, stage1_rerun_notes,
    subjects_section,
)
from itemlm.io import atomic_write_bytes, atomic_write_text


def write_report(config: BenchConfig, out: Path) -> Path:
    """Write `results.json`, `report.md` and the plots into the bench folder (and, without the
    generated text, beside the summaries when `summaries_dir` is set); returns the report's path."""
    cells = plan_cells(config)
    env = environment()
    sessions = read_jsonl(out / "sessions.jsonl")
    store = SummaryStore(config.summaries)
    store.collect(cells, out)
    cell_table, cell_data, compute = cells_section(cells, out, store)
    done = sum(1 for c in cell_data if c["status"] == "done")
    lines = [
        f"# itemlm bench: {config.name}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `itemlm bench`. {done} of {len(cells)} cells finished"
        + ("" if done == len(cells) else " (missing cells show as '-'; run the bench again to finish them)") + ".",
        f"Report built on: {env['machine']}, {env['cpus']} CPUs, {env['memory_gb']} GiB, GPU: {env['gpu'] or 'none'}; "
        f"itemlm {env['itemlm']}, torch {env['torch']}, transformers {env['transformers']}, Python {env['python']} "
        "(each cell's own time, memory and LLM type are in the cell table).",
        f"Compute: {compute / 60:.1f} min summed over finished cells; "
        + (f"bench wall time in this folder {sum(s['wall_seconds'] for s in sessions) / 60:.1f} min over {len(sessions)} session(s)."
           if sessions else "no bench session has run in this folder (the cells' own times are below)."),
        "",
    ]
    results_json: dict = {"config": asdict(config), "environment": env, "sessions": sessions, "datasets": {}, "cells": cell_data}
    drawn: list[str] = []  # the plots this report shows, by file name
    for dataset in config.datasets:
        results = DatasetResults(dataset, cells, store, out)
        if not results.stage2 and not results.references:
            lines += [f"## {dataset}", "", "No finished cells for this dataset.", ""]
            continue
        sc_text, sc_data = sc_section(results, config)
        rank_text, rank_data = ranking_section(results, config)
        labels = [config.claimed(b) for b in (*PRETRAINED_BRIDGES, "ilm-rand")]
        variants = [(label, label, DEFAULT_QUERIES) for label in labels if label in config.bridges]
        sweep = sweep_entries(config, dataset)
        compare_text, compare_data = comparison_section(results, config)
        claims = verdicts(compare_data, config)
        headline = primary_headline(results, config)
        lines += [f"## {dataset}", "", *([headline, ""] if headline else []),
                  "### The paper's claims here", "", "Each claim's evidence is in the significance table further down.", "",
                  *(verdict_lines(claims, config.bootstrap_resamples) or ["Not enough finished cells yet."]), "",
                  "### SC per task", "", sc_text, "", "### Text-seen and text-held-out subjects", "",
                  subjects_section(results, config), "", "### Recommendation (OpenP5-style)", "", rank_text, ""]
        lines += ["### Loss-variant ablation", "", table(ABLATION_HEADER, ablation_rows(results, config, variants)), ""]
        reruns = stage1_rerun_notes(results)
        if reruns:
            lines += ["Stage-2 cells that read a re-run stage-1 model:", "", *reruns, ""]
        if sweep:  # no sweep on this dataset: no section
            lines += ["### Query-token ablation", "", table(ABLATION_HEADER, ablation_rows(results, config, sweep)), ""]
        for plot, name, caption in ((plot_sweep, "sweep", "SC vs query tokens"), (plot_curves, "curves", "training curves"),
                                    (plot_time_to_quality, "time-to-quality", "validation names_title against training time")):
            if plot(results, config, out / f"{name}-{dataset}.png"):
                drawn.append(f"{name}-{dataset}.png")
                lines += [f"![{caption}]({drawn[-1]})", ""]
        lines += ["### Examples", "", Examples(examples_section(results, config)), ""]
        lines += ["### Significance", "", compare_text, ""]
        # numbers and model ids only: the claims' sentences are in report.md
        results_json["datasets"][dataset] = {"sc": sc_data, "recommendation": rank_data, "comparisons": compare_data,
                                             "claims": [{"a": v["a"], "b": v["b"], "outcomes": v["outcomes"]} for v in claims]}
    lines += ["## Cells", "", cell_table, "", "## Config", "", "```yaml", yaml.safe_dump(asdict(config), sort_keys=False).strip(), "```", ""]
    atomic_write_text(out / "results.json", json.dumps(results_json, indent=2, default=float))
    report = out / "report.md"
    atomic_write_text(report, "\n".join(str(line) for line in lines))
    if config.summaries_dir:  # the committed copy, beside the summaries: numbers and plots, no generated text
        summaries = config.summaries
        summaries.mkdir(parents=True, exist_ok=True)
        atomic_write_text(summaries / "results.json", json.dumps(results_json, indent=2, default=float))
        for plot in drawn:  # only this report's plots: an older report's left in `out` would be stale
            atomic_write_bytes(summaries / plot, (out / plot).read_bytes())
        atomic_write_text(summaries / "report.md", "\n".join(line.committed() if isinstance(line, Examples) else line for line in lines))
    return report


def sweep_entries(config: BenchConfig, dataset: str) -> list[tuple[str, str, int]]:
    """The query-token ablation's rows (label, bridge, queries): the sweep's points and, when the swept
    bridge is one of the dataset's bridges, its default query count (its own cell), fewest first."""
    points = set(config.for_dataset(dataset, "query_sweep"))
    if points and config.sweep_variant in config.for_dataset(dataset, "bridges"):
        points.add(DEFAULT_QUERIES)
    return [(f"{config.sweep_variant}, {q} quer{'y' if q == 1 else 'ies'}", config.sweep_variant, q) for q in sorted(points)]


class Examples(str):
    """The report's section of generated text: in the local report only (it quotes dataset text)."""

    def committed(self) -> str:
        return "Generated text is shown in the local report only (it quotes the dataset, which is not committed)."
