"""Run a bench grid: prepare its datasets, run every unfinished cell, write the report.

Stage-1 and stage-2 cells run as `itemlm stage1|stage2 --resume` child processes, `workers` at a
time, each with its share of the CPU threads; a cell starts once the cells it reads are done. Each
child's wall time and peak memory (its own `wait4` rusage) are recorded in the cell's `cell.json`.
Interrupt the bench at any moment and run it again: finished cells are skipped, and the recipe of
an interrupted cell resumes from its last checkpoint. Each finished cell is summarized (numbers
only, itemlm.bench.summaries) into `summaries_dir`; a summarized cell never runs again, so a grid
longer than a working session is committed summary by summary and finished from a fresh clone.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from tqdm.auto import tqdm

from itemlm.bench.grid import BenchConfig, Cell, dataset_identity, plan_cells, recorded_dataset_identity
from itemlm.bench.records import RESULT_FILE, is_done, start_record, write_record
from itemlm.bench.report import write_report
from itemlm.bench.summaries import SummaryStore
from itemlm.config import load_config
from itemlm.errors import InputError
from itemlm.io import atomic_folder, atomic_write_text
from itemlm.paths import shared_data_folder

# ------------------------------------------------------------------ datasets
def prepare_bench_datasets(config: BenchConfig, console: Console) -> list[str]:
    """Prepare the built-in datasets under the bench's data home; returns those available."""
    from itemlm.data.prepare import ML100K_TEXT, PrepareOptions, dataset_folder, prepare_dataset

    available = []
    shared = shared_data_folder()
    for name in config.datasets:
        if (dataset_folder(name, config.home) / "manifest.json").exists():
            available.append(name)
            continue
        if name == "ml-100k":
            options = PrepareOptions()
            movielens = shared / "movielens" if shared else None
            if movielens and (movielens / "ml1m_item_descriptions.json").exists():
                options.item_text = movielens / "ml1m_item_descriptions.json"
                options.item_text_titles = movielens / "ml1m_movies.dat"
                console.print(f"ml-100k: item descriptions joined from {movielens}")
            else:
                console.print("ml-100k: ../shared/data/movielens is absent, so items have no descriptions (no item_description task)")
        elif name == ML100K_TEXT:
            if shared is None or not (shared / "movielens" / "ml1m_item_descriptions.json").exists():
                console.print(f"[yellow]{name}: skipped, the reference descriptions ../shared/data/movielens are absent[/]")
                continue
            options = PrepareOptions()  # prepare_dataset joins the reference descriptions itself
        elif name == "beauty":
            if shared is None or not (shared / "beauty" / "user_sequence.txt").exists():
                console.print("[yellow]beauty: skipped, the reference data ../shared/data/beauty is absent[/]")
                continue
            options = PrepareOptions()
        else:
            raise InputError(
                f"dataset '{name}' is not prepared under {config.home}; run "
                f"`itemlm data prepare {name} --source DIR --data-home {config.home}` first (or set data_home)"
            )
        prepare_dataset(name, options, config.home)
        available.append(name)
    return available


# ------------------------------------------------------------------ in-process cells
def run_in_process(cell: Cell, config: BenchConfig, bench_out: Path) -> None:
    """The references and floors cells: minutes at most, run in the bench process itself."""
    import resource

    from itemlm.bench.floors import sc_floors
    from itemlm.bench.references import run_references
    from itemlm.cf.cache import load_or_train_mf
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split

    started = time.perf_counter()
    stage2 = stage2_settings(cell, config)
    dataset = load_dataset(cell.dataset, config.home)
    split = make_split(dataset, stage2.split)
    cf, _ = load_or_train_mf(split, stage2.mf, dataset=cell.dataset, home=config.home)
    if cell.kind == "references":
        sasrec = {**config.sasrec, **config.per_dataset.get(cell.dataset, {}).get("sasrec", {})}
        result = run_references(split, cf, config.references, sasrec)
    else:
        result = sc_floors(
            dataset, split, cf, eval_seed=stage2.eval_seed, history_length=stage2.history_length,
            max_text_samples=stage2.eval_text_samples, max_rec_samples=stage2.eval_rec_samples, encoder=config.encoder,
        )
    atomic_write_text(cell.folder(bench_out) / "result.json", json.dumps(result))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_record(cell, bench_out, "done", time.perf_counter() - started, round(peak, 2), peak_note="the bench process's peak so far")
    SummaryStore(config.summaries).write(cell, bench_out)


def stage2_settings(cell: Cell, config: BenchConfig):
    from itemlm.train.stage2 import Stage2Config

    return load_config(Stage2Config, config.stage2_preset, [*config.stage2, *config.dataset_overrides(cell.dataset, "stage2")])


# ------------------------------------------------------------------ child-process cells
def stage_command(cell: Cell, cells: dict[str, Cell], config: BenchConfig, bench_out: Path) -> list[str]:
    preset, *overrides = cell.settings
    command = [sys.executable, "-m", "itemlm.cli", cell.kind, "--config", preset.split("=", 1)[1], "--resume", *overrides]
    command += [f"data_home={config.home.resolve()}", f"output_dir={(cell.folder(bench_out) / 'run').resolve()}"]
    if cell.kind == "stage2" and cell.depends:  # a stage-1 variant's Q-Former (plain or under another label)
        stage1 = cells[cell.depends[0]]
        command.append(f"stage1_model={(stage1.folder(bench_out) / 'run' / 'model').resolve()}")
    return command


@dataclass
class Running:
    cell: Cell
    process: subprocess.Popen
    started: float
    log: object


@contextmanager
def stopped_by_sigterm():
    """While inside, SIGTERM (`kill`, a scheduler ending the job) stops the bench as Ctrl-C does, through
    its exception path, so the cells it runs are terminated (and resume from their checkpoints later)
    instead of running on as orphans. Only the main thread can take signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_children(pending: list[Cell], cells: dict[str, Cell], config: BenchConfig, bench_out: Path, workers: int, console: Console) -> list[str]:
    """Run stage cells, at most `workers` at once, each after its dependencies; returns failed ids.
    Ctrl-C or SIGTERM terminates the running cells (they resume from their checkpoints later)."""
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_MININTERVAL="15")
    running: dict[int, Running] = {}
    failed: list[str] = []
    bar = tqdm(total=len(pending), desc="bench cells", unit="cell")
    with stopped_by_sigterm():  # a `kill` of the bench ends its cells too, through the cleanup below
        try:
            while pending or running:
                for cell in list(pending):
                    if len(running) >= workers:
                        break
                    if any(dep in failed for dep in cell.depends):
                        pending.remove(cell)
                        failed.append(cell.id)
                        console.print(f"[red]skipped[/] {cell.id}: a cell it reads failed")
                        bar.update()
                        continue
                    if not all(is_done(cells[dep], bench_out) for dep in cell.depends):
                        continue
                    pending.remove(cell)
                    folder = cell.folder(bench_out)
                    folder.mkdir(parents=True, exist_ok=True)
                    start_record(cell, bench_out)  # before the log is touched: a killed attempt's time is read from it
                    log = open(folder / "log.txt", "a")
                    process = subprocess.Popen(stage_command(cell, cells, config, bench_out), stdout=log, stderr=subprocess.STDOUT, env=env)
                    running[process.pid] = Running(cell, process, time.perf_counter(), log)
                    tqdm.write(f"started  {cell.id} (log: {folder / 'log.txt'})")
                if not running:
                    if pending:  # nothing can start: dependencies missing from the plan
                        raise RuntimeError(f"cells wait on cells that cannot run: {', '.join(c.id for c in pending)}")
                    break
                pid, status, usage = os.wait4(-1, 0)
                if pid not in running:
                    continue
                job = running.pop(pid)
                job.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                job.log.close()
                seconds = time.perf_counter() - job.started
                peak = round(usage.ru_maxrss / 2**20, 2)
                if job.process.returncode == 0 and (job.cell.folder(bench_out) / RESULT_FILE[job.cell.kind]).exists():
                    write_record(job.cell, bench_out, "done", seconds, peak)
                    summaries = SummaryStore(config.summaries)
                    if summaries.has(job.cell):  # re-run only for its model (a fresh clone): what was committed stays
                        tqdm.write(f"finished {job.cell.id} in {seconds:.0f}s for the cells that read it; its committed summary is kept")
                    else:
                        summaries.write(job.cell, bench_out)
                        tqdm.write(f"finished {job.cell.id} in {seconds:.0f}s, peak {peak:.2f} GB")
                else:
                    write_record(job.cell, bench_out, "failed", seconds, peak, returncode=job.process.returncode)
                    failed.append(job.cell.id)
                    tail = (job.cell.folder(bench_out) / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
                    console.print(f"[red]failed[/] {job.cell.id} (exit {job.process.returncode}): " + " | ".join(tail))
                bar.update()
        except BaseException:
            for job in running.values():  # recipes resume from their checkpoints on the next run
                job.process.terminate()
            for job in running.values():  # no orphan keeps writing into the folder after we return
                try:
                    job.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    job.process.kill()
                    job.process.wait()
                job.log.close()
            raise
        finally:
            bar.close()
    return failed


def warn_of_other_data(config: BenchConfig, datasets, console: Console) -> None:
    """Say so when a prepared dataset is not the one the committed summaries were computed on: then no
    committed cell matches and the whole grid of that dataset runs again. The identity hashes the
    Parquet tables, whose bytes also depend on the pandas and pyarrow that wrote them."""
    for dataset in datasets:
        recorded, here = recorded_dataset_identity(config, dataset), dataset_identity(config, dataset)
        if recorded is not None and recorded != here:
            console.print(f"[yellow]warning[/] {dataset}: the prepared data is {here}, the committed summaries were computed on "
                          f"{recorded}; no committed cell matches (other source files, or another pandas/pyarrow wrote the tables: "
                          "docs/benchmarks.md names the versions the committed cells ran with)")


def reuse_cells(cells: list[Cell], bench_out: Path, sources: list[Path], console: Console) -> None:
    """Copy in finished cells of other bench folders that did exactly the same work (same id)."""
    for source in sources:
        if not (Path(source) / "cells").is_dir():
            raise InputError("not a bench folder (no cells/ inside)", path=source)
        for cell in cells:
            if not is_done(cell, bench_out) and is_done(cell, Path(source)):
                with atomic_folder(cell.folder(bench_out)) as staging:  # a copy interrupted halfway is never "done"
                    shutil.copytree(cell.folder(Path(source)), staging, dirs_exist_ok=True)
                console.print(f"reused   {cell.id} from {source}")


def cells_to_run(cells: list[Cell], store: SummaryStore, bench_out: Path) -> list[Cell]:
    """The cells without a summary, in plan order, and the summarized stage-1 cells whose model
    is not here (a fresh clone) but which an unsummarized stage-2 cell reads."""
    by_id = {c.id: c for c in cells}
    todo = {c.id for c in cells if not store.has(c)}
    for cell in cells:
        if cell.id in todo:
            todo.update(dep for dep in cell.depends if not is_done(by_id[dep], bench_out))
    return [c for c in cells if c.id in todo]


def only_matching(todo: list[Cell], cells: list[Cell], patterns: list[str]) -> list[Cell]:
    """The cells of `todo` whose id matches one of the shell-style `patterns` (e.g.
    '*stage2-mlp-s0-*'), with the unfinished cells they read: the part of a grid one working
    session can finish. A pattern that names no cell of the grid is an input error."""
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.id, pattern) for c in cells):
            raise InputError(f"--only '{pattern}' names no cell of this grid (cell ids look like '{cells[-1].id}')")
    chosen = {c.id for c in todo if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)}
    waiting = {c.id for c in todo}
    for cell in todo:
        if cell.id in chosen:
            chosen.update(dep for dep in cell.depends if dep in waiting)
    return [c for c in todo if c.id in chosen]


def cell_counts(cells: int, unfinished: int, to_run: int, only: bool) -> str:
    """'23 cells, 4 already done, 2 to run, 17 left for later (--only)': what this run will do."""
    left_out = f", {unfinished - to_run} left for later (--only)" if only else ""
    return f"{cells} cells, {cells - unfinished} already done, {to_run} to run{left_out}"


def run_bench(
    config: BenchConfig, *, workers: int = 1, console: Console | None = None, run: bool = True, reuse: list[Path] = (),
    only: list[str] = (),
) -> Path:
    """Run (or, with run=False, only report on) the grid; returns the report's path. `only`:
    run just the unfinished cells matching these patterns (`only_matching`); the report covers
    the whole grid either way."""
    console = console or Console()
    bench_out = config.out
    bench_out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    failed: list[str] = []
    lock = open(bench_out / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the OS when this process ends, however it ends
    except BlockingIOError:
        lock.close()
        raise InputError("another `itemlm bench` is writing into this folder; wait for it or pick another output_dir", path=bench_out) from None
    if run:
        datasets = prepare_bench_datasets(config, console)
        warn_of_other_data(config, datasets, console)
        cells = plan_cells(config, datasets)
        by_id = {c.id: c for c in cells}
        reuse_cells(cells, bench_out, list(reuse), console)
        store = SummaryStore(config.summaries)
        store.collect(cells, bench_out)
        todo = cells_to_run(cells, store, bench_out)
        unfinished = len(todo)
        if only:
            todo = only_matching(todo, cells, list(only))
        console.print(f"bench {config.name}: {cell_counts(len(cells), unfinished, len(todo), bool(only))}"
                      f" -> {bench_out} (summaries: {config.summaries})")
        for cell in [c for c in todo if c.kind in ("references", "floors")]:
            console.print(f"running  {cell.id}")
            try:
                run_in_process(cell, config, bench_out)
            except (InputError, KeyboardInterrupt):
                raise
            except Exception as error:  # recorded as failed; the rest of the grid still runs
                write_record(cell, bench_out, "failed", 0.0, 0.0, error=f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}")
                failed.append(cell.id)
                console.print(f"[red]failed[/] {cell.id}: {type(error).__name__}: {error}")
        children = [c for c in todo if c.kind in ("stage1", "stage2")]
        failed += run_children(children, by_id, config, bench_out, workers, console)
        session = {"wall_seconds": round(time.perf_counter() - started, 1), "cells_run": len(todo), "workers": workers,
                   "failed": failed, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        history = bench_out / "sessions.jsonl"
        with open(history, "a") as handle:
            handle.write(json.dumps(session) + "\n")
    report = write_report(config, bench_out)
    if failed:
        console.print(f"[red]{len(failed)} cell(s) failed or were skipped[/]; their logs are in their folders; run the bench again to retry")
    return report
