"""From a dataset name (and maybe a source folder) to a prepared, cached `InteractionDataset`.

Known names need no arguments: `ml-100k` reads the copy inside the installed recbole wheel, and
`ml-100k-text` is the same with the reference MovieLens descriptions joined on (item_description
needs them), and `beauty` reads OpenP5's Amazon Beauty files, both from the reference data folder
when it is present.
Any other name needs `--source` (a folder or file) and the format is detected from the files.
Prepared data lives in `<data home>/datasets/<name>/` as Parquet plus a manifest.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from itemlm.data import amazon, item_text, movielens, openp5
from itemlm.data.dataset import InteractionDataset, RawTables, build_dataset, changed_sources
from itemlm.data.recbole import read_recbole
from itemlm.errors import InputError
from itemlm.paths import data_home, embedded_ml100k_folder, shared_data_folder

FORMATS = ("auto", "recbole", "movielens", "openp5", "amazon")
ML100K_TEXT = "ml-100k-text"
DOWNLOADABLE = ("ml-100k", "ml-1m", "ml-latest-small", "ml-latest", "ml-20m", "ml-25m")


@dataclass
class PrepareOptions:
    source: Path | None = None
    format: str = "auto"
    download: bool = False
    item_text: Path | None = None  # {key: text} JSON or CSV joined onto the items
    item_text_titles: Path | None = None  # key -> "Title (Year)" (ML-1M movies.dat) to join by title
    item_text_field: str = "description"
    text_holdout: float = 0.1
    seed: int = 0
    min_user_interactions: int = 1
    k_core: int = 5  # Amazon review dumps only


def dataset_folder(name: str, home: str | Path | None = None) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"dataset name '{name}' must be a plain name like 'ml-100k'")
    return data_home(home) / "datasets" / name


def detect_format(source: Path) -> str:
    """Guess the source format from the files present."""
    if source.is_file():
        if source.name.startswith("user_sequence") or source.suffix == ".txt":
            return "openp5"
        if ".json" in source.name:
            return "amazon"
        if source.suffix == ".inter":
            return "recbole"
        raise InputError("cannot tell the format of this file; pass --format", path=source)
    names = {p.name for p in source.iterdir()} if source.is_dir() else set()
    if not names:
        raise InputError("source folder is missing or empty", path=source)
    if {"u.data", "ratings.dat", "ratings.csv"} & names:
        return "movielens"
    if any(n.endswith(".inter") for n in names):
        return "recbole"
    if "user_sequence.txt" in names:
        return "openp5"
    if any(".json" in n for n in names):
        return "amazon"
    raise InputError(
        "no known dataset files here (u.data, ratings.dat, ratings.csv, *.inter, user_sequence.txt, "
        "Amazon *.json[.gz]); pass --format",
        path=source,
    )


def read_source(name: str, options: PrepareOptions, home: str | Path | None = None) -> RawTables:
    source = options.source
    if options.download:
        if name not in DOWNLOADABLE:
            raise InputError(f"--download knows {', '.join(DOWNLOADABLE)}, not '{name}'")
        source = movielens.download_movielens(name, data_home(home) / "downloads")
    if source is None:
        if name in ("ml-100k", ML100K_TEXT):
            return read_recbole(embedded_ml100k_folder())
        if name == "beauty":
            shared = shared_data_folder()
            if shared is None or not (shared / "beauty" / "user_sequence.txt").exists():
                raise InputError("the Beauty reference data (../shared/data/beauty) is absent; pass --source DIR")
            beauty = shared / "beauty"
            return openp5.read_user_sequences(beauty / "user_sequence.txt", item_text=beauty / "item_titles.json")
        raise InputError(f"dataset '{name}' is not built in; pass --source DIR (and --format if needed)")
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError("source not found", path=source)
    fmt = detect_format(source) if options.format == "auto" else options.format
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}': expected one of {', '.join(FORMATS)}")
    if fmt == "recbole":
        return read_recbole(source.parent if source.is_file() else source, source.stem if source.is_file() else None)
    if fmt == "movielens":
        return movielens.read_movielens(source)
    if fmt == "openp5":
        sequences = source if source.is_file() else source / "user_sequence.txt"
        titles = None if source.is_file() else next(
            (p for p in (source / "item_titles.json", source / "item_titles.csv") if p.exists()), None
        )
        return openp5.read_user_sequences(sequences, item_text=titles)
    reviews, meta = _amazon_files(source)
    return amazon.read_amazon(reviews, meta, k_core=options.k_core)


def _amazon_files(source: Path) -> tuple[Path, Path | None]:
    if source.is_file():
        return source, None
    files = sorted(p for p in source.iterdir() if ".json" in p.name)
    meta = next((p for p in files if p.name.startswith("meta")), None)
    reviews = [p for p in files if not p.name.startswith("meta")]
    if not reviews:
        raise InputError("no Amazon review file (*.json or *.json.gz) in this folder", path=source)
    return reviews[0], meta


def shared_movielens_text() -> dict:
    """The item-text options of `ml-100k-text`: the reference MovieLens descriptions in ../shared/data."""
    shared = shared_data_folder()
    folder = None if shared is None else shared / "movielens"
    if folder is None or not (folder / "ml1m_item_descriptions.json").exists():
        raise InputError(f"{ML100K_TEXT} needs the MovieLens descriptions of the reference data "
                         "(../shared/data/movielens/ml1m_item_descriptions.json), which are absent here; "
                         "use ml-100k, or prepare your own with --item-text")
    return {"item_text": folder / "ml1m_item_descriptions.json", "item_text_titles": folder / "ml1m_movies.dat"}


def prepare_dataset(name: str, options: PrepareOptions | None = None, home: str | Path | None = None) -> InteractionDataset:
    """Read, clean, enrich, hold out item text, and cache the dataset; returns it."""
    options = options or PrepareOptions()
    if name == ML100K_TEXT and options.item_text is None and options.source is None:
        options = dataclasses.replace(options, **shared_movielens_text())
    raw = read_source(name, options, home)
    if options.item_text is not None:
        texts = item_text.read_text_mapping(options.item_text)
        key_titles = item_text.read_ml1m_titles(options.item_text_titles) if options.item_text_titles else None
        if raw.items is None:
            raise InputError("this source has no item table to join text onto", path=options.item_text)
        raw.items, report = item_text.join_item_text(
            raw.items, texts, field=options.item_text_field, key_titles=key_titles, source=options.item_text
        )
        raw.notes["item_text"] = {"file": str(options.item_text), "field": options.item_text_field, **report}
        raw.sources.append(Path(options.item_text))
    dataset = build_dataset(
        name,
        raw,
        text_holdout=options.text_holdout,
        seed=options.seed,
        min_user_interactions=options.min_user_interactions,
    )
    dataset.save(dataset_folder(name, home))
    return dataset


def load_dataset(name: str, home: str | Path | None = None) -> InteractionDataset:
    """Load a prepared dataset; the embedded ML-100K is prepared on first use.

    A source file that changed since preparation is said on stderr: the prepared copy is still
    what loads (models trained on it stay consistent) until the dataset is prepared again.
    """
    folder = dataset_folder(name, home)
    if not (folder / "manifest.json").exists():
        if name in ("ml-100k", ML100K_TEXT):
            return prepare_dataset(name, home=home)
        raise InputError(f"dataset '{name}' is not prepared; run `itemlm data prepare {name} --source DIR`")
    dataset = InteractionDataset.load(folder)
    changed = changed_sources(dataset.manifest)
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        print(f"warning: dataset '{name}' in {folder} was prepared from {changed[0]}{more}, which changed since; "
              f"this is the earlier copy (run `itemlm data prepare {name}` again to read the new contents)", file=sys.stderr)
    return dataset
