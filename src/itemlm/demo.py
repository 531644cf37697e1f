"""`itemlm demo`: the whole pipeline on the embedded ML-100K with quick settings.

data -> leave-one-out split -> MF -> stage 1 (Q-Former) -> stage 2 (frozen SmolLM2 + adapter)
-> evaluation -> a few generations -> how to start `itemlm chat`. Everything runs offline from
packaged assets; runs are cached under runs/demo, so a second `make demo` resumes instead of
starting over (a finished stage is not retrained).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console


def run_stage(verb: str, preset: str, overrides: list[str]) -> None:
    """`itemlm stage1|stage2 --config PRESET --resume key=value ...` in a child process."""
    command = [sys.executable, "-m", "itemlm.cli", verb, "--config", preset, "--resume", *overrides]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"itemlm demo: `itemlm {verb}` failed; its messages are above")


def run_demo(data_home: Path | None = None, console: Console | None = None, runs: Path = Path("runs/demo"), fast: bool = False) -> dict:
    from itemlm.cf.mf import MFConfig, load_or_train_mf
    from itemlm.cf.mostpop import MostPopular
    from itemlm.cli import ranking_table
    from itemlm.data.prepare import PrepareOptions, prepare_dataset
    from itemlm.data.splits import leave_one_out_split
    from itemlm.eval.ranking import evaluate_ranking
    from itemlm.models.ilm import ItemLanguageModel

    console = console or Console()
    started = time.perf_counter()
    console.rule("[bold]itemlm demo · MovieLens-100K (embedded)")
    dataset = prepare_dataset("ml-100k", PrepareOptions(), data_home)
    stats = dataset.stats()
    console.print(f"1. data: {stats['users']} users, {stats['items']} items, {stats['interactions']:,} interactions")
    split = leave_one_out_split(dataset)
    console.print(f"2. split: leave-one-out, {len(split.train):,} training interactions, {len(split.test)} test users")
    # The same cached MF the stage-1 and stage-2 processes read: trained once for the whole demo.
    embeddings, folder = load_or_train_mf(split, MFConfig(), dataset="ml-100k", home=data_home)
    console.print(f"3. MF (ALS, {embeddings.dim} factors) -> {folder}")
    ranking = {
        "MostPop": evaluate_ranking(MostPopular(split).score, split, "test").metrics,
        "MF-als": evaluate_ranking(embeddings.score, split, "test").metrics,
    }
    console.print(ranking_table(ranking, "test split, full ranking", ks=(10,)))

    # Each stage runs as its own `itemlm` process, as a person would run it: its memory goes back
    # to the OS when it ends, so the demo's peak is the larger stage's, not their sum.
    shared = [f"data_home={data_home}"] if data_home else []
    # 150 of the quick preset's 300 stage-1 steps keep `make demo` inside 10 minutes on 2 cores.
    stage1_overrides = shared + [f"output_dir={runs / 'stage1'}", "steps=20" if fast else "steps=150"]
    if not (runs / "stage1" / "metrics.json").exists():
        console.print("4. stage 1: pre-training the item Q-Former (ITC + ITM + ITG) ...")
        run_stage("stage1", "stage1-quick", stage1_overrides)
    s1 = json.loads((runs / "stage1" / "metrics.json").read_text())
    console.print(
        f"4. stage 1 done: item->text recall@10 {s1['text_seen']['i2t_recall@10']:.3f} (text-seen items), "
        f"{s1['text_held_out']['i2t_recall@10']:.3f} (text-held-out items); chance {s1['chance_recall@10']:.4f}"
    )

    stage2_overrides = shared + [f"output_dir={runs / 'stage2'}", f"stage1_model={runs / 'stage1' / 'model'}"]
    if fast:
        stage2_overrides += ["steps=6", "eval_text_samples=4", "eval_rec_samples=8"]
    if not (runs / "stage2" / "metrics.json").exists():
        console.print("5. stage 2: fine-tuning Q-Former + adapter into the frozen SmolLM2 ...")
        run_stage("stage2", "stage2-quick", stage2_overrides)
    s2 = json.loads((runs / "stage2" / "metrics.json").read_text())
    console.print(f"5. stage 2 done in {s2['train']['seconds']:.0f}s of training + {s2.get('eval_seconds', 0):.0f}s of evaluation")

    model = ItemLanguageModel.from_pretrained(runs / "stage2" / "model")
    held_out = int(dataset.items.index[dataset.items["text_held_out"]][0])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    console.print(f"   peak memory of the stage processes: {peak:.2f} GB")
    console.print("6. examples")
    console.print(f"   describe item {held_out} (text held out; truth: {model.catalogue.titles[held_out]}): {model.describe(held_out)}")
    history = split.train_sequences()[0][-5:].tolist()
    recs = model.recommend(history=history, k=5)
    console.print(f"   after {', '.join(model.catalogue.titles[i] for i in history)}:")
    for rank, (_, title, score) in enumerate(recs, start=1):
        console.print(f"     {rank}. {title}  (log-prob {score:.2f})")
    console.print(f"done in {time.perf_counter() - started:.0f}s · talk to it: [bold]itemlm chat --model {runs / 'stage2' / 'model'}[/]")
    return {"ranking": ranking, "stage1": s1, "stage2": s2}
