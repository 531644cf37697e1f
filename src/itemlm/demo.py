"""`itemlm demo`: the standard recipe at a small budget, on ML-100K, in about 10 minutes on 2 cores.

data -> leave-one-out split -> MF (hyperparameters tuned on validation) -> stage 2 with the
standard preset (warm start in the LLM's embedding space, then a short multi-task run, learning
curve points at its start and end) -> evaluation -> what the model says about a few items next to
the truth -> how to start `itemlm chat`. Everything runs offline from packaged assets (and the
reference MovieLens descriptions when ../shared/data has them). Runs are cached under runs/demo,
so a second `make demo` reuses the trained model; a `--fast` smoke run writes to its own folder
and is never shown as the real demo's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

# The standard preset, shortened to fit the demo's 10 minutes: the closed-form warm start (seconds),
# then most of the budget on the naming phase, which is what buys names on 2 cores
# (docs/benchmarks.md, "Stage 2 learns"), and a short mixture. Ranking mode's retriever is MF here
# (SASRec would take minutes to train). Validation at the start and the end only (each point costs ~25 s).
DEMO_BUDGET = ["curriculum=[{steps: 30, task_weights: {item_title: 1}, batch_size: 32}]",
               "steps=46", "validate_every=46", "validation_names=20", "validation_sc=8", "eval_text_samples=16",
               "eval_rec_samples=10", "checkpoint_every=23", "ranking.retriever=mf", "eval_rank_users=100",
               "ranking.calibrate=false", "ranking.train_positions=0",  # with them: 10 min 37 s, over the 10 minutes
               "eval_prompts=seen"]  # the unseen-prompt gap is the standard run's to measure: both sets took 11 min 23 s
FAST_BUDGET = ["curriculum=[]", "steps=4", "validate_every=4", "validation_names=2", "validation_sc=2", "max_target_tokens=16",
               "eval_text_samples=2", "eval_rec_samples=4", "eval_beams=4", "checkpoint_every=2", "ranking.retriever=mf",
               "eval_rank_users=8", "ranking.calibrate=false", "ranking.train_positions=0", "eval_prompts=seen"]  # the calibration has its own tests
EXAMPLE_PROMPT = "What is the title of <item:{item}>?"
DESCRIBE_PROMPT = "What is the movie <item:{item}> about? Describe it."


def run_stage(verb: str, preset: str, overrides: list[str], how: str = "--resume") -> None:
    """`itemlm stage1|stage2 --config PRESET --resume|--overwrite key=value ...` in a child process."""
    command = [sys.executable, "-m", "itemlm.cli", verb, "--config", preset, how, *overrides]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"itemlm demo: `itemlm {verb}` failed; its messages are above")


def demo_dataset(data_home: Path | None) -> str:
    """ml-100k-text when the reference descriptions are here (item_description is then trained), else ml-100k."""
    from itemlm.data.prepare import ML100K_TEXT, shared_movielens_text
    from itemlm.errors import InputError

    try:
        shared_movielens_text()
        return ML100K_TEXT
    except InputError:
        return "ml-100k"


def example_items(items, count_seen: int = 3, count_held: int = 2) -> list[int]:
    """A few items of each kind, the same every run: the first text-seen and text-held-out ones."""
    held = items["text_held_out"].to_numpy(dtype=bool)
    seen_items = [i for i in range(len(items)) if not held[i]][:count_seen]
    return seen_items + [i for i in range(len(items)) if held[i]][:count_held]


def run_demo(data_home: Path | None = None, console: Console | None = None, runs: Path = Path("runs/demo"), fast: bool = False) -> dict:
    from itemlm.cf.cache import load_or_train_mf
    from itemlm.cf.mf import MFConfig
    from itemlm.config import load_config
    from itemlm.train.run_folder import same_run
    from itemlm.train.stage2 import Stage2Config
    from itemlm.cf.mostpop import MostPopular
    from itemlm.data.prepare import prepare_dataset
    from itemlm.data.splits import leave_one_out_split
    from itemlm.display import ranking_table
    from itemlm.eval.naming import names_title
    from itemlm.cf.evaluate import evaluate_ranking
    from itemlm.models.ilm import ItemLanguageModel

    console = console or Console()
    started = time.perf_counter()
    if fast:  # a smoke run never shares a folder with the real demo
        runs = runs.with_name(runs.name + "-fast")
    name = demo_dataset(data_home)
    console.rule(f"[bold]itemlm demo · MovieLens-100K ({name})")
    dataset = prepare_dataset(name, home=data_home)
    stats = dataset.stats()
    console.print(f"1. data: {stats['users']} users, {stats['items']} items, {stats['interactions']:,} interactions"
                  + ("" if name != "ml-100k" else " (no descriptions here: item_description is skipped)"))
    split = leave_one_out_split(dataset)
    console.print(f"2. split: leave-one-out, {len(split.train):,} training interactions, {len(split.test)} test users")
    # The same cached MF the stage-2 process reads: tuned and trained once for the whole demo.
    embeddings, folder = load_or_train_mf(split, MFConfig(tuned=True), dataset=name, home=data_home)
    console.print(f"3. MF (ALS tuned on validation, {embeddings.dim} factors) -> {folder}")
    ranking = {
        "MostPop": evaluate_ranking(MostPopular(split).score, split, "test").metrics,
        "MF-als": evaluate_ranking(embeddings.score, split, "test").metrics,
    }
    console.print(ranking_table(ranking, "test split, full ranking", ks=(10,)))

    # Stage 2 runs as its own `itemlm` process, as a person would run it: its memory goes back to
    # the OS when it ends.
    overrides = [f"dataset={name}", f"output_dir={runs / 'stage2'}", *(FAST_BUDGET if fast else DEMO_BUDGET)]
    overrides += [f"data_home={data_home}"] if data_home else []
    # a finished run is reused only when it was trained with exactly these settings (an earlier
    # itemlm version's demo budget is retrained, over its folder)
    ours = same_run(runs / "stage2", asdict(load_config(Stage2Config, "standard", overrides)))
    if not (ours and (runs / "stage2" / "metrics.json").exists()):
        console.print("4. stage 2: warm start of the bridge in SmolLM2's embedding space, then fine-tuning it into the frozen LLM ...")
        run_stage("stage2", "standard", overrides, "--resume" if ours else "--overwrite")
    s2 = json.loads((runs / "stage2" / "metrics.json").read_text())
    console.print(f"4. stage 2 done: {s2['train'].get('train_seconds', s2['train']['seconds']):.0f}s of training "
                  f"(warm start included) + {s2.get('eval_seconds', 0):.0f}s of evaluation")
    title = s2.get("test", {}).get("item_title", {}).get("seen", {})
    if "names_title" in title:
        console.print(f"   names_title on test items: {title.get('names_title_text_seen', float('nan')):.2f} text-seen, "
                      f"{title.get('names_title_text_held_out', float('nan')):.2f} text-held-out (n={title['n']})")

    model = ItemLanguageModel.from_pretrained(runs / "stage2" / "model")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    console.print(f"   peak memory of the stage-2 process: {peak:.2f} GB")
    console.print("5. what the model says about items from their CF vectors alone")
    held = dataset.items["text_held_out"].to_numpy(dtype=bool)
    chosen = example_items(dataset.items)
    answers = model.generate([EXAMPLE_PROMPT.format(item=i) for i in chosen], max_new_tokens=24)
    descriptions = model.generate([DESCRIBE_PROMPT.format(item=i) for i in chosen], max_new_tokens=40)
    named = model.name(chosen)  # the same question answered within the catalogue's titles
    for item, answer, (_, catalogue_title, _), description in zip(chosen, answers, named, descriptions):
        truth = model.catalogue.titles[item]
        mark = "[green]names it[/]" if names_title(answer, truth) else "[red]misses[/]"
        within = "[green]names it[/]" if catalogue_title == truth else "[red]misses[/]"
        kind = "text held out" if held[item] else "text seen"
        console.print(f"   item {item} ({kind}; truth: {truth})\n     title? {answer!r}  {mark}\n"
                      f"     title, within the catalogue? {catalogue_title!r}  {within}\n     about? {description!r}")
        if held[item]:  # a free answer describes another film; the chat says what the vectors carry
            console.print(f"     what the chat says of it (the year and genres it reads): {model.describe(item)!r}")
    history = split.train_sequences()[0][-5:].tolist()
    recs = model.recommend(history=history, k=5)
    how = "ranking mode: the retriever's candidates ordered by the LLM" if model.ranker is not None else "constrained decoding"
    console.print(f"   after {', '.join(model.catalogue.titles[i] for i in history)} ({how}):")
    for rank, reason in enumerate(model.explain(history, [item for item, _, _ in recs]), start=1):
        console.print(f"     {rank}. {reason}")
    ranked = s2.get("test", {}).get("ranking_mode")
    if ranked:
        console.print(f"   ranking mode on {ranked['users']} test users: HR@10 {ranked['ranking_mode']['HR@10']:.3f} "
                      f"(its retriever alone: {ranked['retriever']['HR@10']:.3f})")
    console.print(f"done in {time.perf_counter() - started:.0f}s · talk to it: [bold]itemlm chat --model {runs / 'stage2' / 'model'}[/]")
    return {"ranking": ranking, "stage2": s2}
