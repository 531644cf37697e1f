"""The `itemlm` command: thin verbs over the library. Bad input prints one line and exits 2."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from itemlm.display import ranking_table, stage2_table
from itemlm.errors import InputError

app = typer.Typer(
    help="Teach a frozen LLM about items and users from collaborative filtering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare datasets and inspect them.", no_args_is_help=True)
cf_app = typer.Typer(help="Train, tune and evaluate matrix-factorization embeddings.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(cf_app, name="cf")
console = Console()


def print_version(value: bool) -> None:
    if value:
        from itemlm import __version__

        print(f"itemlm {__version__}")
        raise typer.Exit()


@app.callback()
def itemlm_options(
    version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True, help="Print itemlm's version and exit."),
):
    """Teach a frozen LLM about items and users from collaborative filtering."""


HomeOption = typer.Option(None, "--data-home", help="Data folder (default $ITEMLM_HOME or ~/.cache/itemlm).")


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(..., help="Dataset name: ml-100k (embedded), beauty, or your own name."),
    source: Optional[Path] = typer.Option(None, help="Folder or file to read (default: built-in source)."),
    format: str = typer.Option("auto", help="auto, recbole, movielens, openp5 or amazon."),
    download: bool = typer.Option(False, help="Download a MovieLens release from GroupLens first."),
    item_text: Optional[Path] = typer.Option(None, help="{item key: text} JSON or CSV to join onto items."),
    item_text_titles: Optional[Path] = typer.Option(
        None, help="Match --item-text by title+year through this ML-1M-style movies.dat."
    ),
    item_text_field: str = typer.Option("description", help="Item column the joined text fills."),
    text_holdout: float = typer.Option(0.1, help="Fraction of items whose text training never sees."),
    min_user_interactions: int = typer.Option(1, help="Drop users with fewer interactions."),
    k_core: int = typer.Option(5, help="k-core filter for Amazon review dumps (0 disables)."),
    seed: int = typer.Option(0, help="Seed of the text hold-out."),
    data_home: Optional[Path] = HomeOption,
):
    """Read a dataset, clean it, cache it as Parquet with a manifest."""
    from itemlm.data.prepare import PrepareOptions, dataset_folder, prepare_dataset

    options = PrepareOptions(
        source=source,
        format=format,
        download=download,
        item_text=item_text,
        item_text_titles=item_text_titles,
        item_text_field=item_text_field,
        text_holdout=text_holdout,
        seed=seed,
        min_user_interactions=min_user_interactions,
        k_core=k_core,
    )
    started = time.perf_counter()
    dataset = prepare_dataset(name, options, data_home)
    stats = dataset.stats()
    console.print(
        f"prepared [bold]{name}[/]: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions in {time.perf_counter() - started:.1f}s -> "
        f"{dataset_folder(name, data_home)}"
    )
    if "item_text" in dataset.manifest.get("notes", {}):
        report = dataset.manifest["notes"]["item_text"]
        console.print(f"item text joined: {report.get('matched')} of {stats['items']} items matched")


@data_app.command("stats")
def data_stats(
    name: str = typer.Argument(..., help="A prepared dataset name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_home: Optional[Path] = HomeOption,
):
    """Sizes, density, sequence lengths, text coverage and cleaning counts."""
    from itemlm.data.prepare import load_dataset

    stats = load_dataset(name, data_home).stats()
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    table = Table(title=f"dataset {name}", show_header=False)
    for key, value in stats.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


@cf_app.command("train")
def cf_train(
    name: str = typer.Argument("ml-100k", help="A prepared dataset name."),
    algorithm: str = typer.Option("als", help="als or bpr."),
    factors: int = typer.Option(64, help="Embedding dimension."),
    iterations: int = typer.Option(30),
    regularization: float = typer.Option(0.05),
    alpha: float = typer.Option(2.0, help="ALS confidence weight."),
    learning_rate: float = typer.Option(0.05, help="BPR learning rate."),
    split: str = typer.Option("leave-one-out", help="leave-one-out or temporal."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="Threads (0 = all cores)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the one the recipes read for this config)."),
    data_home: Optional[Path] = HomeOption,
):
    """Fit MF on the training split; save user and item embeddings (safetensors)."""
    from itemlm.cf.mf import MFConfig, mf_folder, train_mf
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split

    dataset = load_dataset(name, data_home)
    the_split = make_split(dataset, split)
    config = MFConfig(algorithm, factors, iterations, regularization, alpha, learning_rate, threads, seed)
    started = time.perf_counter()
    embeddings = train_mf(the_split, config, progress=True, dataset=name)
    folder = embeddings.save_pretrained(out or mf_folder(the_split, config, dataset=name, home=data_home))
    console.print(f"trained {algorithm} ({factors} factors) in {time.perf_counter() - started:.1f}s -> {folder}")


@cf_app.command("tune")
def cf_tune(
    name: str = typer.Argument(..., help="A prepared dataset name."),
    algorithms: str = typer.Option("als,bpr", help="Comma-separated: als, bpr."),
    split: str = typer.Option("leave-one-out", help="leave-one-out or temporal."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="ALS threads (0 = all cores; BPR always runs on 1)."),
    data_home: Optional[Path] = HomeOption,
):
    """Pick MF hyperparameters by validation HR@10 over a small grid (cached); recipes use them with mf.tuned=true."""
    from itemlm.cf.cache import load_or_train_mf
    from itemlm.cf.tune import tune_mf
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.cf.evaluate import evaluate_ranking

    wanted = tuple(a.strip() for a in algorithms.split(",") if a.strip())
    the_split = make_split(load_dataset(name, data_home), split)
    started = time.perf_counter()
    result = tune_mf(the_split, wanted, dataset=name, home=data_home, seed=seed, num_threads=threads)
    console.print(tune_table(result, f"{name} · {split} · grid by validation HR@10"))
    embeddings, folder = load_or_train_mf(the_split, result.best, dataset=name, home=data_home)
    chosen = {stage: evaluate_ranking(embeddings.score, the_split, stage).metrics for stage in ("valid", "test")}
    console.print(f"chosen (* above): {_config_text(result.best.cache_key())}")
    table = Table()
    for column in ("stage", "HR@10", "NDCG@10"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, metrics in chosen.items():
        table.add_row(stage, f"{metrics['HR@10']:.4f}", f"{metrics['NDCG@10']:.4f}")
    console.print(table)
    console.print(f"{time.perf_counter() - started:.1f}s; vectors -> {folder}; recipes read them with mf.tuned=true")


def _config_text(config: dict) -> str:
    step = f"alpha {config['alpha']:g}" if config["algorithm"] == "als" else f"lr {config['learning_rate']:g}"
    return f"{config['algorithm']}, {config['factors']} factors, {config['iterations']} it, reg {config['regularization']:g}, {step}"


def tune_table(result, title: str) -> Table:
    """The grid by validation HR@10; the chosen row (fewest factors within one standard error) has a *."""
    table = Table(title=title)
    for column in ("#", "algo", "factors", "it", "reg", "alpha", "lr", "valid HR@10", "valid NDCG@10", "fit s"):
        table.add_column(column, justify="left" if column == "algo" else "right")
    chosen = result.best.cache_key()
    for rank, row in enumerate(result.ranked(), 1):
        c, als = row["config"], row["config"]["algorithm"] == "als"
        table.add_row(
            f"{rank}*" if c == chosen else str(rank), c["algorithm"], str(c["factors"]), str(c["iterations"]), f"{c['regularization']:g}",
            f"{c['alpha']:g}" if als else "-", "-" if als else f"{c['learning_rate']:g}",
            f"{row['valid']['HR@10']:.4f}", f"{row['valid']['NDCG@10']:.4f}", f"{row['seconds']:.1f}",
        )
    return table


@cf_app.command("eval")
def cf_eval(
    name: str = typer.Argument("ml-100k", help="A prepared dataset name."),
    model: Optional[Path] = typer.Option(None, help="Embeddings folder (default: the newest fitted on this split)."),
    stage: str = typer.Option("test", help="valid or test."),
    split: str = typer.Option("leave-one-out", help="leave-one-out or temporal."),
    keep_seen: bool = typer.Option(False, help="Rank items the user already consumed too."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_home: Optional[Path] = HomeOption,
):
    """Full-catalogue HR@K / NDCG@K of MostPop and the MF embeddings."""
    from itemlm.cf.cache import check_fits
    from itemlm.cf.mf import CFEmbeddings, trained_mf_folders
    from itemlm.cf.mostpop import MostPopular
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.cf.evaluate import evaluate_ranking

    dataset = load_dataset(name, data_home)
    the_split = make_split(dataset, split)
    if model is None:
        folders = trained_mf_folders(the_split, dataset=name, home=data_home)
        if not folders:
            raise InputError(
                f"no MF embeddings fitted on the {split} split of '{name}': "
                f"run `itemlm cf train {name} --split {split}` or pass --model"
            )
        model = folders[0]
    embeddings = check_fits(CFEmbeddings.from_pretrained(model), the_split, name, Path(model))
    results = {
        "MostPop": evaluate_ranking(MostPopular(the_split).score, the_split, stage, exclude_seen=not keep_seen).metrics,
        f"MF-{embeddings.config.algorithm}": evaluate_ranking(
            embeddings.score, the_split, stage, exclude_seen=not keep_seen
        ).metrics,
    }
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        console.print(ranking_table(results, f"{name} · {split} · {stage} · {model.name}"))


def is_main_process() -> bool:
    """False in the processes other than the first of a distributed run (they print nothing)."""
    from accelerate import PartialState

    return PartialState().is_main_process


@app.command()
def stage1(
    config: str = typer.Option("stage1-quick", "--config", "-c", help="Preset name or YAML file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. variant=ilm-it-ii steps=600."),
    resume: bool = typer.Option(False, help="Continue the run in the output folder from its latest checkpoint (same settings)."),
    overwrite: bool = typer.Option(False, help="Start over in an output folder that holds a run (its checkpoints and results are deleted)."),
    allow_change: Optional[list[str]] = typer.Option(None, "--allow-change", help="With --resume: a setting that may differ from the saved run's (e.g. steps)."),
):
    """Pre-train the item Q-Former (ILM stage 1) and write metrics.json beside the model."""
    from itemlm.config import load_config
    from itemlm.train.stage1 import Stage1Config, train_stage1

    settings = load_config(Stage1Config, config, overrides or [])
    model_folder = train_stage1(settings, resume=resume, overwrite=overwrite, may_change=tuple(allow_change or ()))
    if not is_main_process():
        return
    metrics = json.loads((settings.out / "metrics.json").read_text())
    table = Table(title=f"stage 1 · {settings.variant} · init {settings.init} · {metrics['items']} items")
    table.add_column("items")
    for column in ("i2t R@1", "i2t R@5", "i2t R@10", "t2i R@10", "ITM acc", "ITG ppl"):
        table.add_column(column, justify="right")
    for group in ("text_seen", "text_held_out"):
        m = metrics[group]
        table.add_row(
            f"{group} ({m['items']})",
            *[f"{m[k]:.3f}" for k in ("i2t_recall@1", "i2t_recall@5", "i2t_recall@10", "t2i_recall@10", "itm_accuracy")],
            f"{m['itg_perplexity']:.1f}",
        )
    console.print(table)
    console.print(f"chance recall@10: {metrics['chance_recall@10']:.4f} · model: {model_folder}")


@app.command()
def stage2(
    config: str = typer.Option("stage2-quick", "--config", "-c", help="Preset name or YAML file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. bridge=mlp steps=300."),
    resume: bool = typer.Option(False, help="Continue the run in the output folder from its latest checkpoint (same settings)."),
    overwrite: bool = typer.Option(False, help="Start over in an output folder that holds a run (its checkpoints and results are deleted)."),
    allow_change: Optional[list[str]] = typer.Option(None, "--allow-change", help="With --resume: a setting that may differ from the saved run's (e.g. steps)."),
    evaluate: bool = typer.Option(True, help="Evaluate on the test split after training."),
):
    """Fine-tune a bridge into the frozen LLM on many tasks (ILM stage 2); evaluate it."""
    from itemlm.config import load_config
    from itemlm.train.stage2 import Stage2Config, train_stage2

    settings = load_config(Stage2Config, config, overrides or [])
    folder = train_stage2(settings, resume=resume, overwrite=overwrite, may_change=tuple(allow_change or ()), evaluate=evaluate)
    if not is_main_process():
        return
    metrics = json.loads((settings.out / "metrics.json").read_text())
    if "test" in metrics:
        console.print(stage2_table(metrics["test"], f"stage 2 · bridge {settings.bridge} · test"))
    console.print(f"model: {folder}\nchat with it: itemlm chat --model {folder}")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="Prompt text; name items as <item:INDEX> and users as <user:INDEX>."),
    model: Path = typer.Option(..., "--model", "-m", help="A model folder written by `itemlm stage2`."),
    max_new_tokens: int = typer.Option(64),
    recommend: int = typer.Option(0, help="Instead of free text, return this many catalogue items."),
):
    """One-off generation (or constrained recommendation) from a trained model."""
    from itemlm.models.ilm import ItemLanguageModel

    ilm = ItemLanguageModel.from_pretrained(model)
    if recommend:
        for rank, (item, score) in enumerate(ilm.recommend_prompts([prompt], recommend)[0], start=1):
            print(f"{rank}. {ilm.catalogue.titles[item]}  (item {item}, log-prob {score:.2f})")
    else:
        print(ilm.generate([prompt], max_new_tokens)[0])


@app.command()
def chat(
    model: Path = typer.Option(..., "--model", "-m", help="A model folder written by `itemlm stage2`."),
    k: int = typer.Option(5, min=1, max=20, help="Recommendations per answer (1-20)."),
    consensus: int = typer.Option(0, min=0, help="Free answers: 0 greedy; N the consensus of the greedy answer and N samples (about 5x slower per answer)."),
):
    """Talk to a trained model: name titles you liked, get recommendations, refine them."""
    from itemlm.chat.session import HELP, ChatSession
    from itemlm.models.ilm import ItemLanguageModel

    ilm = ItemLanguageModel.from_pretrained(model)
    ilm.consensus = consensus
    session = ChatSession(ilm, k=k)
    console.print(f"[bold]itemlm chat[/] · {session.model.catalogue.num_items} items · {HELP}")
    while True:
        try:
            text = input("you> ")
        except EOFError:
            break
        if text.strip().lower() in ("quit", "exit"):
            break
        for piece in session.respond_stream(text):  # what was understood first, then the model's words
            console.print(piece, end="", markup=False, highlight=False)
        console.print()


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="A model folder written by `itemlm stage2`."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs an API key."),
    port: int = typer.Option(8000, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, envvar="ITEMLM_API_KEY", help="Bearer token every /v1 route wants (or $ITEMLM_API_KEY)."),
    db: Optional[Path] = typer.Option(None, help="SQLite file of the conversations (default: sessions.sqlite beside the model folder)."),
    cors_origin: list[str] = typer.Option([], help="Allow browser calls from this origin (repeatable); CORS is off without it."),
    max_waiting: int = typer.Option(64, help="Requests that may wait for the model before the server answers 503."),
    consensus: int = typer.Option(0, help="Free answers: 0 greedy; N the consensus of the greedy answer and N samples (about 5x slower per answer)."),
    max_sessions: int = typer.Option(10_000, help="Conversations kept in the database; the least recently used beyond it are dropped."),
):
    """Serve a model: an OpenAI-compatible chat API, a recommendations API and a chat page at /."""
    from itemlm.serve.run import serve_model

    serve_model(model, host=host, port=port, api_key=api_key, db=db, cors_origins=cors_origin, max_waiting=max_waiting, consensus=consensus,
                max_sessions=max_sessions)


@app.command()
def demo(
    data_home: Optional[Path] = HomeOption,
    runs: Path = typer.Option(Path("runs/demo"), help="Where the demo's stage-1 and stage-2 runs go (reused when present)."),
    fast: bool = typer.Option(False, help="A smoke run with a handful of steps (checks the wiring, not the quality)."),
):
    """Run the whole pipeline on the embedded ML-100K: MF, stage 1, stage 2, evaluation, examples."""
    from itemlm.demo import run_demo

    run_demo(data_home, console, runs=runs, fast=fast)


@app.command()
def bench(
    config: str = typer.Argument("bench-ml100k", help="Bench preset (bench-ml100k, bench-beauty, bench-quick) or YAML file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. seeds=[0] output_dir=results/x."),
    quick: bool = typer.Option(False, "--quick", help="The bench-quick preset: ML-100K, one seed, < 30 min on 2 cores."),
    workers: int = typer.Option(1, min=1, help="Cells run at once (each gets cores / workers threads)."),
    reuse: Optional[list[Path]] = typer.Option(None, help="Another bench folder whose finished identical cells are copied in."),
    report_only: bool = typer.Option(False, help="Rebuild report.md and results.json from finished cells; run nothing."),
    only: Optional[list[str]] = typer.Option(None, help="Run only the cells whose id matches this pattern (repeatable), e.g. '*stage2-mlp-s0-*', and what they need."),
    status: bool = typer.Option(False, "--status", help="Show each cell's state (finished, running, interrupted, ...) and the compute left; run nothing, write nothing."),
):
    """Run the paper's experiments as a resumable grid and write results/<name>/report.md."""
    from itemlm.bench.grid import BenchConfig
    from itemlm.bench.runner import run_bench
    from itemlm.config import load_config

    settings = load_config(BenchConfig, "bench-quick" if quick else config, overrides or [])
    if status:
        from itemlm.bench.status import print_status

        print_status(settings, console)
        return
    report = run_bench(settings, workers=workers, console=console, run=not report_only, reuse=reuse or [], only=only or [])
    console.print(f"report: {report}")


def main() -> None:
    try:
        app()
    except InputError as error:
        # one line, whatever the user typed: control characters in a quoted value are shown escaped
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(error))
        print(f"itemlm: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("itemlm: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
