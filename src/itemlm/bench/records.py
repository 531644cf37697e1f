"""What a bench keeps on disk per cell: its `cell.json` record and the files its work wrote.

The runner writes these records and the report reads them, so both import this module (and not
each other).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from itemlm.bench.grid import Cell
from itemlm import io
from itemlm.io import atomic_write_text

RESULT_FILE = {"stage1": "run/metrics.json", "stage2": "run/metrics.json", "references": "result.json", "floors": "result.json"}
"""Per cell kind, the file (inside the cell folder) whose presence means the cell's work finished."""


def read_json(path: Path) -> dict:
    """The JSON object in a file, or {} when the file does not exist (yet); a damaged one is an InputError."""
    return io.read_json(path) if path.exists() else {}


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line of a JSON-lines file, or [] when the file does not exist (yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def cell_record(folder: Path) -> dict:
    """The cell's `cell.json` (status, seconds, peak memory, attempts), or {} for a cell never run."""
    return read_json(folder / "cell.json")


def is_done(cell: Cell, bench_out: Path) -> bool:
    """True when the cell is recorded as done and its result file is there."""
    folder = cell.folder(bench_out)
    return cell_record(folder).get("status") == "done" and (folder / RESULT_FILE[cell.kind]).exists()


def start_record(cell: Cell, bench_out: Path) -> None:
    """Mark the cell running before an attempt starts.

    A record still marked running belongs to an attempt that was killed (a session ending, a
    reboot) before it could write its own: that attempt's time, from its start to the last write
    to the cell's log, is added to the cell's cost and it counts as an attempt. Its peak memory
    is unknown and is not guessed.
    """
    folder = cell.folder(bench_out)
    previous = cell_record(folder)
    if not previous or previous.get("status") == "done":
        atomic_write_text(folder / "cell.json", json.dumps({"id": cell.id, "status": "running", "started_at": time.time()}, indent=2))
        return
    seconds, attempts = previous.get("seconds", 0.0), previous.get("attempts", 0)
    log = folder / "log.txt"
    if previous.get("status") == "running" and "started_at" in previous:
        attempts += 1
        if log.exists():
            seconds += max(0.0, log.stat().st_mtime - previous["started_at"])
    record = {**previous, "status": "running", "seconds": round(seconds, 1), "attempts": attempts, "started_at": time.time()}
    atomic_write_text(folder / "cell.json", json.dumps(record, indent=2))


def write_record(cell: Cell, bench_out: Path, status: str, seconds: float, peak_rss_gb: float | None, **extra) -> None:
    """Write the cell's `cell.json` after an attempt, adding to the time and attempts of earlier ones."""
    folder = cell.folder(bench_out)
    previous = cell_record(folder)
    record = {
        "id": cell.id, "kind": cell.kind, "dataset": cell.dataset, "settings": list(cell.settings),
        "depends": list(cell.depends), "status": status,
        # the time of earlier failed attempts counts towards the cell's cost
        "seconds": round(previous.get("seconds", 0.0) + seconds, 1) if previous.get("status") != "done" else round(seconds, 1),
        "attempts": previous.get("attempts", 0) + 1,
        "peak_rss_gb": max(filter(None, [peak_rss_gb, previous.get("peak_rss_gb")]), default=None),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), **extra,
    }
    atomic_write_text(folder / "cell.json", json.dumps(record, indent=2))
