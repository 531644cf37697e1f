"""The report's PNG plots: SC against the number of query tokens, and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from itemlm.bench.grid import BenchConfig
from itemlm.bench.results import DEFAULT_QUERIES, DatasetResults


def plot_sweep(results: DatasetResults, config: BenchConfig, path: Path) -> bool:
    """Plot SC against query tokens for the sweep variant into path; False (nothing written) under two sweep points."""
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
    """Plot the first seed's stage-1 and stage-2 loss curves into path; False (nothing written) without any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    drawn, first_seed = False, config.for_dataset(results.dataset, "seeds")[0]
    for (bridge, queries, seed), cell in sorted(results.stage1.items()):
        if seed == first_seed and queries == DEFAULT_QUERIES:
            log = [r for r in results.curve(cell) if "loss" in r]
            left.plot([r["step"] for r in log], [r["loss"] for r in log], label=bridge)
            drawn = True
    for (bridge, queries, seed), cell in sorted(results.stage2.items(), key=lambda kv: str(kv[0])):
        if seed == first_seed and queries in (DEFAULT_QUERIES, None):
            log = [r for r in results.curve(cell) if "loss" in r]
            if log:
                right.plot([r["step"] for r in log], [r["loss"] for r in log], label=bridge)
                drawn = True
    left.set_title("stage 1: total loss")
    right.set_title("stage 2: next-token loss on targets")
    for axis in (left, right):
        axis.set_xlabel("step")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(f"{results.dataset}: training curves (seed {first_seed})")
    figure.tight_layout()
    if drawn:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return drawn


def plot_time_to_quality(results: DatasetResults, config: BenchConfig, path: Path, measure: str = "names_title_text_seen") -> bool:
    """Every bridge's validation `measure` against its training seconds (first seed) on one chart;
    False (nothing written) when no cell logged validation points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    drawn, first_seed = False, config.for_dataset(results.dataset, "seeds")[0]
    for (bridge, queries, seed), cell in sorted(results.stage2.items(), key=lambda kv: str(kv[0])):
        if seed != first_seed or queries not in (DEFAULT_QUERIES, None):
            continue
        points = [(r["train_seconds"], r["validation"][measure]) for r in results.curve(cell)
                  if measure in r.get("validation", {}) and "train_seconds" in r]
        if points:
            axis.plot(*zip(*points), marker="o", markersize=3, label=bridge)
            drawn = True
    axis.set_xlabel("training seconds")
    axis.set_ylabel(measure.replace("_", " "))
    axis.set_title(f"{results.dataset}: time to quality (validation, seed {first_seed})")
    if drawn:
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return drawn
