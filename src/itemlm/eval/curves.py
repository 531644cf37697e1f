"""Learning curves: validation signals against training seconds, one line per run, on one clock.

`metrics.jsonl` (stage 2) holds a record with a "validation" mapping at every probe; the x axis
is "train_seconds" (warm start and training steps, validation excluded), so runs of different
speeds and recipes compare by what they reach in the same time, not in the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path

PANELS = (
    ("names_title_text_seen", "names_title, text-seen items"),
    ("names_title_text_held_out", "names_title, text-held-out items"),
    ("SC_", "SC (validation subset)"),
    ("nll_", "reference NLL, mean over tasks"),
)


def read_curve(metrics_jsonl: str | Path) -> list[dict]:
    """[{"train_seconds", "step", metric: value, ...}] from a run's metrics.jsonl (validation points only)."""
    points = []
    for line in Path(metrics_jsonl).read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if "validation" in record:
            points.append({"step": record["step"], "train_seconds": record.get("train_seconds", 0.0), **record["validation"]})
    return points


def panel_value(point: dict, key: str) -> float | None:
    """A point's value for a panel: an exact key, or the mean over keys with that prefix."""
    if key in point:
        return point[key]
    values = [v for k, v in point.items() if k.startswith(key) and v is not None]
    return sum(values) / len(values) if values else None


def plot_learning_curves(curves: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """One PNG with a panel per signal; each run is one line (x: training minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for axis, (key, label) in zip(axes, PANELS):
        for name, points in curves.items():
            xs = [p["train_seconds"] / 60 for p in points if panel_value(p, key) is not None]
            ys = [panel_value(p, key) for p in points if panel_value(p, key) is not None]
            if xs:
                axis.plot(xs, ys, marker="o", markersize=3, label=name)
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("training minutes")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
