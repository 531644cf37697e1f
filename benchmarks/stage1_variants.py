"""Stage-1 benchmark: train each variant with the quick preset on ML-100K and collect its metrics.

Each variant runs as its own `itemlm stage1` process, so its wall time and peak memory are its own.
Writes results/stage1/summary.json and prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python benchmarks/stage1_variants.py [--preset stage1-quick] [--variants ilm-it ilm-it-ii ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "ilm-it": ["variant=ilm-it"],
    "ilm-it-ii": ["variant=ilm-it-ii"],
    "ilm-it-ui": ["variant=ilm-it-ui"],
    "random-init (ilm-it)": ["variant=ilm-it", "init=random"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="stage1-quick")
    parser.add_argument("--variants", nargs="*", default=list(RUNS))
    parser.add_argument("--out", type=Path, default=Path("results/stage1"))
    parser.add_argument("overrides", nargs="*", help="key=value passed to every run")
    args = parser.parse_args()
    summary = {}
    for name in args.variants:
        folder = args.out / name.split(" ")[0].replace("(", "").replace(")", "") / ("random" if "random" in name else "bert")
        command = [
            sys.executable, "-m", "itemlm.cli", "stage1", "--config", args.preset,
            *RUNS[name], f"output_dir={folder}", *args.overrides,
        ]
        print("$", " ".join(command[2:]), flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["train"]["wall_seconds_with_startup"] = round(time.perf_counter() - started, 1)
        summary[name] = metrics
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(markdown(summary))


def markdown(summary: dict) -> str:
    lines = [
        "| run | items | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@10 | ITM acc | ITG ppl | train s | peak RSS GB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, metrics in summary.items():
        for group in ("text_seen", "text_held_out"):
            m = metrics[group]
            lines.append(
                f"| {name} | {group.replace('_', '-')} ({m['items']}) | {m['i2t_recall@1']:.3f} | {m['i2t_recall@5']:.3f} "
                f"| {m['i2t_recall@10']:.3f} | {m['t2i_recall@10']:.3f} | {m['itm_accuracy']:.3f} "
                f"| {m['itg_perplexity']:.1f} | {metrics['train']['seconds']} | {metrics['train']['peak_rss_gb']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
