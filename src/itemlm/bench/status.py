"""Where a bench grid stands, read from disk without taking the bench's lock.

A grid such as bench-standard runs over many working sessions, so its user needs to see, at any
moment and beside a bench that is running, what is finished, what is under way and how far it got
(training step, finished evaluation parts), what was interrupted or failed, and roughly how much
compute is left. `itemlm bench NAME --status` prints that; nothing is written.

The estimate of what is left is, per unfinished cell (an in-progress one counts whole), the mean
time of the finished cells of the same kind, dataset and bridge, else of the same kind and dataset;
cells with nothing to go by are counted apart rather than guessed.
"""

from __future__ import annotations

import fcntl
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from itemlm.bench.grid import BenchConfig, Cell, plan_cells
from itemlm.bench.records import cell_record, is_done, read_json
from itemlm.bench.summaries import SummaryStore

RECENT_SECONDS = 600
"""A cell whose log changed this recently, while a bench holds the folder, is the one running."""


@dataclass(frozen=True)
class CellStatus:
    cell: Cell
    state: str  # finished | running | interrupted | failed | not started
    progress: str = ""  # e.g. "training: step 300 / 1415 checkpointed", "trained; evaluating: 7 parts done"
    seconds: float | None = None  # compute recorded for it (a finished cell's time, or earlier attempts')
    peak_gb: float | None = None


@dataclass(frozen=True)
class GridStatus:
    cells: list[CellStatus]
    bench_running: bool
    seconds_left: float  # estimated, over the unfinished cells that have something to go by
    cells_not_estimated: int  # unfinished cells with no finished cell of their kind and dataset

    def count(self, state: str) -> int:
        return sum(status.state == state for status in self.cells)

    @property
    def seconds_spent(self) -> float:
        return sum(status.seconds or 0.0 for status in self.cells)


def bench_is_running(bench_out: Path) -> bool:
    """Whether an `itemlm bench` holds this folder's lock (tried and released at once)."""
    path = bench_out / ".lock"
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def training_progress(run: Path) -> str:
    """How far a stage-1/stage-2 run folder got: evaluation parts, else its last checkpoint."""
    parts = run / "evaluation-parts"
    if parts.is_dir() or (run / "model").is_dir():  # the model is saved once training ends, before evaluation
        done = len(list(parts.glob("*.json")))
        return f"trained; evaluating: {done} part{'s' if done != 1 else ''} done"
    latest = run / "checkpoints" / "latest"
    total = read_json(run / "config.json").get("steps")  # {} before the recipe wrote it
    of_total = f" / {total}" if isinstance(total, int) and total > 0 else ""
    if latest.exists():
        name = latest.read_text().strip()
        step = name.removeprefix("step-").lstrip("0") or "0"
        if step.isdigit():
            return f"training: step {step}{of_total} checkpointed"
    return "starting" if run.is_dir() else ""


def cell_status(cell: Cell, store: SummaryStore, bench_out: Path, bench_running: bool, now: float) -> CellStatus:
    folder = cell.folder(bench_out)
    record = cell_record(folder)
    if store.has(cell):
        summarized = store.read(cell).get("record", {})
        return CellStatus(cell, "finished", "", summarized.get("seconds"), summarized.get("peak_rss_gb"))
    if is_done(cell, bench_out):
        return CellStatus(cell, "finished", "not yet summarized", record.get("seconds"), record.get("peak_rss_gb"))
    if not folder.exists():
        return CellStatus(cell, "not started")
    progress = training_progress(folder / "run") if cell.kind in ("stage1", "stage2") else ""
    log = folder / "log.txt"
    recent = log.exists() and now - log.stat().st_mtime < RECENT_SECONDS
    if bench_running and (recent or not (log.exists() or record)):  # its log moves, or it has only just started
        state = "running"
    elif record.get("status") == "failed":
        state, progress = "failed", record.get("error") or progress
    else:
        state = "interrupted"
    return CellStatus(cell, state, progress, record.get("seconds"), record.get("peak_rss_gb"))


def grid_status(config: BenchConfig, now: float | None = None) -> GridStatus:
    """Every cell of the grid (all its datasets, prepared or not) with its state and time."""
    bench_out, now = config.out, time.time() if now is None else now
    running = bench_is_running(bench_out)
    store = SummaryStore(config.summaries)
    statuses = [cell_status(cell, store, bench_out, running, now) for cell in plan_cells(config)]
    finished: dict[tuple, list[float]] = defaultdict(list)  # by (kind, dataset, bridge) and by (kind, dataset)
    for status in statuses:
        if status.state == "finished" and status.seconds:
            cell = status.cell
            finished[(cell.kind, cell.dataset, cell.bridge)].append(status.seconds)
            finished[(cell.kind, cell.dataset)].append(status.seconds)
    left, unknown = 0.0, 0
    for status in statuses:
        if status.state == "finished":
            continue
        cell = status.cell
        times = finished.get((cell.kind, cell.dataset, cell.bridge)) or finished.get((cell.kind, cell.dataset))
        if times:
            left += sum(times) / len(times)
        else:
            unknown += 1
    return GridStatus(statuses, running, left, unknown)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def print_status(config: BenchConfig, console) -> GridStatus:
    """Print the grid's state, one table per dataset, and a summary line; returns it."""
    from rich.table import Table

    status = grid_status(config)
    colours = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "not started": "dim"}
    console.print(f"bench {config.name}: {config.out} (summaries: {config.summaries})")
    for dataset in dict.fromkeys(cell.cell.dataset for cell in status.cells):
        table = Table(title=dataset, title_justify="left", box=None, pad_edge=False)
        table.add_column("state", no_wrap=True)
        table.add_column("cell", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("peak", justify="right", no_wrap=True)
        table.add_column("progress")
        for cell in (c for c in status.cells if c.cell.dataset == dataset):
            table.add_row(f"[{colours[cell.state]}]{cell.state}[/]", cell.cell.id.split("/", 1)[1],
                          hours(cell.seconds) if cell.seconds else "", f"{cell.peak_gb:.1f} GB" if cell.peak_gb else "",
                          cell.progress)
        console.print(table)
    states = ", ".join(f"{status.count(s)} {s}" for s in colours if status.count(s))
    unfinished = len(status.cells) - status.count("finished")
    estimate = "every cell finished" if not unfinished else (
        f"about {hours(status.seconds_left)} of compute left for {unfinished - status.cells_not_estimated}"
        f" of the {unfinished} unfinished cells")
    if status.cells_not_estimated:
        estimate += f" ({status.cells_not_estimated} with no finished cell of their kind on their dataset to go by)"
    console.print(f"{len(status.cells)} cells: {states}. {hours(status.seconds_spent)} of compute recorded; {estimate}."
                  + (" A bench is running in this folder." if status.bench_running else ""))
    return status
