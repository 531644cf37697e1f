"""Time to quality: stage-2 recipes on one clock, drawn on one chart.

Each configuration is one `itemlm stage2 --config PRESET name=... <overrides>` process (one after
another, never side by side: they would share the cores and slow each other). Every run logs its
validation probe against training seconds (warm start included, validation excluded); this script
reads the curves back, draws them on one chart, and writes the points as JSON (numbers only).

    .venv/bin/python benchmarks/time_to_quality.py
    .venv/bin/python benchmarks/time_to_quality.py --only standard mixture-only --out results/ttq
    .venv/bin/python benchmarks/time_to_quality.py --plot-only   # redraw from finished runs
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

from itemlm.eval.curves import plot_learning_curves, read_curve

# name -> overrides of the preset; every run shares the preset's data, LLM, batch and evaluation probe
CONFIGURATIONS = {
    "standard": [],  # closed-form warm start, naming phase, mixture, naming phase, lr 1e-5 constant
    "gradient-warm-start": ["warm_start.solve=false", "warm_start.steps=1200"],  # the head fitted by AdamW instead (4 minutes)
    "mixture-only": ["curriculum=[]"],  # no naming phases
    "faster-lr": ["learning_rate=3e-5"],
    "cold-projector-lr": ["warm_start.enabled=false", "curriculum=[]", "learning_rate=1e-3"],  # as LLaVA / CoLLM projectors
    "cold-low-lr": ["warm_start.enabled=false", "curriculum=[]"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGURATIONS), help="run these configurations only")
    parser.add_argument("--out", type=Path, default=Path("results/time_to_quality"))
    parser.add_argument("--plot-only", action="store_true", help="draw the runs already under --out")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. bridge=ilm-rand)")
    args = parser.parse_args()

    names = args.only or list(CONFIGURATIONS)
    for name in names if not args.plot_only else []:
        folder = args.out / name
        if (folder / "metrics.json").exists():
            print(f"{name}: done already ({folder})")
            continue
        command = [
            sys.executable, "-m", "itemlm.cli", "stage2", "--config", args.preset, "--no-evaluate", "--resume",
            f"name={name}", f"output_dir={folder}", *([f"steps={args.steps}"] if args.steps else []), f"validate_every={args.validate_every}",
            *CONFIGURATIONS[name], *args.overrides,
        ]
        print("$", " ".join(command[1:]), flush=True)
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"{name} failed; its messages are above")

    curves = {name: read_curve(args.out / name / "metrics.jsonl") for name in names if (args.out / name / "metrics.jsonl").exists()}
    chart = plot_learning_curves(curves, args.out / "time_to_quality.png", f"{args.preset}: validation signals against training time")
    summary = {
        "command": " ".join(["benchmarks/time_to_quality.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "configurations": {name: CONFIGURATIONS[name] + args.overrides for name in curves},
        "curves": curves,
    }
    (args.out / "time_to_quality.json").write_text(json.dumps(summary, indent=2))
    print(f"chart: {chart}\npoints: {args.out / 'time_to_quality.json'}")


if __name__ == "__main__":
    main()
