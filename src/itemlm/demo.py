"""`itemlm demo`: everything that exists, end to end, on the embedded ML-100K with quick settings."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console


def run_demo(data_home: Path | None = None, console: Console | None = None) -> dict:
    from itemlm.cf.mf import MFConfig, train_mf
    from itemlm.cf.mostpop import MostPopular
    from itemlm.cli import ranking_table
    from itemlm.data.prepare import PrepareOptions, prepare_dataset
    from itemlm.data.splits import leave_one_out_split
    from itemlm.eval.ranking import evaluate_ranking
    from itemlm.paths import data_home as home

    console = console or Console()
    started = time.perf_counter()
    console.rule("[bold]itemlm demo · MovieLens-100K (embedded)")
    dataset = prepare_dataset("ml-100k", PrepareOptions(), data_home)
    stats = dataset.stats()
    console.print(f"1. data: {stats['users']} users, {stats['items']} items, {stats['interactions']:,} interactions")
    split = leave_one_out_split(dataset)
    console.print(f"2. split: leave-one-out, {len(split.train):,} training interactions, {len(split.test)} test users")
    embeddings = train_mf(split, MFConfig(), dataset="ml-100k")
    folder = embeddings.save_pretrained(home(data_home) / "models" / "ml-100k" / "mf-als")
    console.print(f"3. MF (ALS, {embeddings.dim} factors) -> {folder}")
    results = {
        "MostPop": evaluate_ranking(MostPopular(split).score, split, "test").metrics,
        "MF-als": evaluate_ranking(embeddings.score, split, "test").metrics,
    }
    console.print(ranking_table(results, "4. test split, full ranking", ks=(10,)))
    console.print(f"done in {time.perf_counter() - started:.1f}s")
    return results
