"""One bench cell's warm start and step-0 validation under each `llm_dtype`, on this machine.

Runs the cell's own stage-2 command (as `itemlm bench` would) with `llm_dtype` changed and
`--no-evaluate`, into a scratch folder per type, and stops it once the step-0 validation (right
after the warm start) is logged. Prints, per type, the warm start's fit and the validation numbers
(names_title on 50 text-seen items, reference NLL per task, SC on 16 descriptions): numbers only.

    .venv/bin/python benchmarks/float_type_probe.py 'stage2-ilm-rand-frozen-q8-s1' bfloat16 float32 \\
        --out docs/results/bench_dtype_probe_ml100k.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from itemlm.bench.grid import BenchConfig, plan_cells
from itemlm.bench.runner import stage_command
from itemlm.config import load_config


def step0(cell, cells, config, dtype: str, scratch: Path) -> dict:
    out = scratch / dtype
    command = [a for a in stage_command(cell, cells, config, config.out) if not a.startswith("output_dir=") and a != "--resume"]
    command += [f"output_dir={out}", f"llm_dtype={dtype}", "--no-evaluate", "--overwrite"]
    with open(scratch / f"{dtype}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                time.sleep(3)
                rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if (out / "metrics.jsonl").exists() else []
                validation = next((r["validation"] for r in rows if r.get("step") == 0 and "validation" in r), None)
                if validation is not None:
                    warm = next(r["warm_start"] for r in rows if "warm_start" in r)
                    return {"warm_start_loss": warm["loss"], "warm_start_token_accuracy": warm["token_accuracy"], **validation}
        finally:
            process.kill()
    raise SystemExit(f"{cell.id} under {dtype} exited ({process.returncode}) before its step-0 validation: see {scratch / f'{dtype}.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", help="a regular expression matching one cell id of the bench")
    parser.add_argument("dtypes", nargs="+", help="llm_dtype values to compare, e.g. bfloat16 float32")
    parser.add_argument("--bench", default="bench-standard")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers here as JSON")
    args = parser.parse_args()
    config = load_config(BenchConfig, args.bench)
    cells = {c.id: c for c in plan_cells(config)}
    matching = [c for i, c in cells.items() if re.search(args.cell, i) and c.kind == "stage2"]
    if len(matching) != 1:
        raise SystemExit(f"'{args.cell}' matches {len(matching)} stage-2 cells of {args.bench}; name exactly one")
    cell = matching[0]
    with tempfile.TemporaryDirectory() as scratch:
        result = {"cell": cell.label} | {dtype: step0(cell, cells, config, dtype, Path(scratch)) for dtype in args.dtypes}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
