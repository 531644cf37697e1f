"""The bench grid: which cells an `itemlm bench` config asks for, and how each one runs.

A cell is one unit of work with its own folder: a stage-1 pre-training, a stage-2 fine-tuning +
evaluation, the reference recommenders of a dataset, or the SC floors of a dataset. Its folder
name ends with a hash of everything that determines its result (not of paths), so a finished cell
is reused whenever the same work is asked for again -- after an interruption, or by a bigger grid
whose cells include a smaller one's -- and a changed setting makes a new cell instead of silently
reusing an old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from itemlm.errors import InputError
from itemlm.variants import BRIDGES, VARIANTS

PRETRAINED_BRIDGES = tuple(VARIANTS)
"""Bench bridges that are a stage-1 variant's Q-Former plugged in with bridge=ilm."""
BENCH_BRIDGES = PRETRAINED_BRIDGES + tuple(b for b in BRIDGES if b != "ilm")
REFERENCES = ("mostpop", "mf", "sasrec")
PER_DATASET_KEYS = ("stage1", "stage2", "sasrec", "bridges", "seeds", "query_sweep")


def check_overrides(where: str, overrides) -> None:
    """An InputError unless `overrides` is a list of "key=value" texts (YAML's `- steps: 300` is a mapping)."""
    if not isinstance(overrides, list):
        raise InputError(f"{where}: expected a list of key=value overrides, got {overrides!r}")
    for override in overrides:
        if not isinstance(override, str) or "=" not in override:
            raise InputError(f"{where}: expected key=value overrides (a text such as \"steps=300\"), got {override!r}")


@dataclass
class BenchConfig:
    """An `itemlm bench` grid; presets live in itemlm/configs/bench-*.yaml."""

    name: str = "bench"
    datasets: list = field(default_factory=lambda: ["ml-100k"])
    bridges: list = field(default_factory=lambda: list(BENCH_BRIDGES[:3]) + ["ilm-rand", "mlp", "text-only"])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    # {label: [seeds]}: the seeds a bridge or variant runs instead of every seed of the grid (a
    # secondary comparison on one seed, the primary ones on all); a dataset's own seeds still bound them
    bridge_seeds: dict = field(default_factory=dict)
    query_sweep: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # query tokens, for sweep_variant
    sweep_variant: str = "ilm-it-ii"
    sweep_seeds: list = field(default_factory=lambda: [0])
    references: list = field(default_factory=lambda: list(REFERENCES))
    sasrec: dict = field(default_factory=dict)  # SASRecConfig fields
    stage1_preset: str = "stage1-quick"
    stage1: list = field(default_factory=list)  # key=value overrides of the stage-1 preset
    stage2_preset: str = "stage2-quick"
    stage2: list = field(default_factory=list)  # key=value overrides of the stage-2 preset
    per_dataset: dict = field(default_factory=dict)  # {dataset: {stage1: [...], stage2: [...], sasrec: {...}, bridges, seeds, query_sweep}}
    # {label: {bridge: one of BENCH_BRIDGES, stage2: [...], compare_to: label}}: a bridge with other stage-2 settings,
    # compared in the report with compare_to (default: its bridge)
    variants: dict = field(default_factory=dict)
    per_bridge: dict = field(default_factory=dict)  # {bench bridge: [stage-2 overrides]}: what that bridge (and its variants) needs to learn
    # {query count: [stage-2 overrides]}: what a Q-Former bridge needs at that many query tokens (one
    # query token has no room for the warm start's tag slots); the cells at other counts keep their keys
    per_query: dict = field(default_factory=dict)
    encoder: str | None = None  # sentence encoder of SC and its floors; None: the packaged MiniLM
    primary: str = "ilm-it-ii"  # the ILM the significance tests compare with the others
    # {bench bridge: a variant of it}: the settings of a bridge that stand for it in the paper's claims, the
    # primary's headline and the loss-variant table (default: the bridge itself)
    claim_labels: dict = field(default_factory=dict)
    compare_with: list = field(default_factory=lambda: ["ilm-rand", "mlp", "text-only"])
    bootstrap_resamples: int = 10000  # per comparison, of the subject bootstrap and of the permutation test
    data_home: str | None = None  # None: <output>/data, where built-in datasets are prepared
    output_dir: str | None = None  # None: results/<name>
    summaries_dir: str | None = None  # one small JSON of numbers per finished cell, to commit; None: <output>/summaries

    def __post_init__(self):
        for label, variant in self.variants.items():
            if not isinstance(variant, dict) or variant.get("bridge") not in BENCH_BRIDGES or label in BENCH_BRIDGES:
                raise InputError(f"variants.{label} must be a new name with bridge: one of {', '.join(BENCH_BRIDGES)} (and stage2: [key=value, ...])")
            if not isinstance(variant.get("stage2", []), list) or set(variant) - {"bridge", "stage2", "compare_to"}:
                raise InputError(f"variants.{label} takes bridge, stage2 (a list of key=value overrides) and compare_to only")
        unknown = [b for b in self.bridges if b not in BENCH_BRIDGES and b not in self.variants]
        if unknown:
            raise InputError(f"unknown bridge '{unknown[0]}' in bridges: expected some of {', '.join(BENCH_BRIDGES)} or a name under variants")
        if self.query_sweep and self.base_bridge(self.sweep_variant) not in PRETRAINED_BRIDGES:
            raise InputError(f"sweep_variant must be a stage-1 variant ({', '.join(PRETRAINED_BRIDGES)}) or a name under variants "
                             f"that runs one, got '{self.sweep_variant}'")
        unknown = [r for r in self.references if r not in REFERENCES]
        if unknown:
            raise InputError(f"unknown reference recommender '{unknown[0]}': expected some of {', '.join(REFERENCES)}")
        if not self.datasets:
            raise InputError("datasets is empty: name at least one (ml-100k, beauty or a prepared dataset)")
        for bridge, overrides in self.per_bridge.items():
            if bridge not in BENCH_BRIDGES or not isinstance(overrides, list):
                raise InputError(f"per_bridge.{bridge}: expected one of {', '.join(BENCH_BRIDGES)} with a list of stage-2 key=value overrides")
        for queries, overrides in self.per_query.items():
            if not isinstance(queries, int) or queries < 1 or not isinstance(overrides, list):
                raise InputError(f"per_query.{queries}: expected a query count (a positive integer) with a list of stage-2 key=value overrides")
        counts = {"": [*self.seeds, *self.sweep_seeds, *self.query_sweep]}  # where -> seeds and query counts
        for label, seeds in self.bridge_seeds.items():
            if label not in self.bridges or not isinstance(seeds, list) or not seeds:
                raise InputError(f"bridge_seeds.{label}: expected one of bridges with a non-empty list of seeds, got {seeds!r}")
            counts[f"bridge_seeds.{label}: "] = seeds
        for dataset, own in self.per_dataset.items():
            if not isinstance(own, dict) or set(own) - set(PER_DATASET_KEYS):
                raise InputError(f"per_dataset.{dataset} takes some of {', '.join(PER_DATASET_KEYS)}")
            unknown = [b for b in own.get("bridges", []) if b not in self.bridges]
            if unknown:
                raise InputError(f"per_dataset.{dataset}.bridges: '{unknown[0]}' is not one of bridges (a dataset runs a subset of them)")
            counts[f"per_dataset.{dataset}: "] = [*own.get("seeds", []), *own.get("query_sweep", [])]
        for where, numbers in counts.items():
            for number in numbers:
                if not isinstance(number, int) or number < 0:
                    raise InputError(f"{where}seeds and query_sweep must be non-negative integers, got {number!r}")
        lists = {"stage1": self.stage1, "stage2": self.stage2}
        lists |= {f"per_bridge.{bridge}": overrides for bridge, overrides in self.per_bridge.items()}
        lists |= {f"per_query.{queries}": overrides for queries, overrides in self.per_query.items()}
        lists |= {f"variants.{label}.stage2": variant.get("stage2", []) for label, variant in self.variants.items()}
        lists |= {f"per_dataset.{dataset}.{stage}": own[stage] for dataset, own in self.per_dataset.items()
                  for stage in ("stage1", "stage2") if stage in own}
        for where, overrides in lists.items():
            check_overrides(where, overrides)
        for bridge, label in self.claim_labels.items():
            if label not in self.bridges or self.base_bridge(label) != bridge:
                raise InputError(f"claim_labels.{bridge}: expected one of bridges that runs {bridge} (itself or a variant of it), got '{label}'")
        for label, variant in self.variants.items():
            if "compare_to" in variant and variant["compare_to"] not in self.bridges:
                raise InputError(f"variants.{label}.compare_to: '{variant.get('compare_to')}' is not one of bridges")
        for name in (self.primary, *self.compare_with):
            if self.claimed(name) not in self.bridges:
                raise InputError(f"'{self.claimed(name)}' is compared in the report but is not one of bridges")

    @property
    def out(self) -> Path:
        return Path(self.output_dir or f"results/{self.name}")

    @property
    def summaries(self) -> Path:
        return Path(self.summaries_dir) if self.summaries_dir else self.out / "summaries"

    @property
    def home(self) -> Path:
        return Path(self.data_home) if self.data_home else self.out / "data"

    def base_bridge(self, label: str) -> str:
        """The bench bridge a label runs (a variant's, or the label itself)."""
        return self.variants[label]["bridge"] if label in self.variants else label

    def claimed(self, bridge: str) -> str:
        """The label whose cells stand for `bridge` in the paper's claims (`claim_labels`, else the bridge)."""
        return self.claim_labels.get(bridge, bridge)

    def compared_to(self, label: str) -> str:
        """What a variant is measured against in the report: its `compare_to`, else the bridge it runs."""
        return self.variants[label].get("compare_to", self.variants[label]["bridge"])

    def dataset_overrides(self, dataset: str, stage: str) -> list:
        return list(self.per_dataset.get(dataset, {}).get(stage, []))

    def for_dataset(self, dataset: str, key: str) -> list:
        """The bridges, seeds or query sweep run on `dataset`: its own list under per_dataset, else the grid's."""
        return list(self.per_dataset.get(dataset, {}).get(key, getattr(self, key)))


@dataclass(frozen=True)
class Cell:
    """One unit of the grid. `settings` (no paths) determine the result; `key` hashes them."""

    kind: str  # stage1 | stage2 | references | floors
    dataset: str
    label: str  # e.g. "ilm-it-ii-q8-s0"
    settings: tuple = ()
    depends: tuple = ()  # ids of cells whose output this one reads
    bridge: str | None = None
    seed: int | None = None
    queries: int | None = None
    identity: str = ""  # what the preset is (`preset_identity`): part of the key, never passed to the recipe

    @property
    def key(self) -> str:
        text = json.dumps([self.kind, self.dataset, list(self.settings), list(self.depends), self.identity], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.kind}-{self.label}-{self.key}"

    def folder(self, bench_out: Path) -> Path:
        return bench_out / "cells" / self.id


@functools.lru_cache(maxsize=None)  # read once per preset, however many cells share it
def preset_identity(name: str) -> str:
    """What a preset *is*, not what it is called: a hash of its file's content (and of its `base`
    chain's) and the itemlm version, so editing a preset or upgrading itemlm never reuses a cell
    computed under the old one."""
    from itemlm import __version__
    from itemlm.config import config_chain

    content = b"".join(path.read_bytes() for path in config_chain(name))
    return f"preset-sha256={hashlib.sha256(content).hexdigest()[:16]},itemlm={__version__}"


def dataset_identity(config: BenchConfig, dataset: str) -> str:
    """What the prepared dataset *is*: a hash of its tables' content, so a dataset prepared again
    with other content (new source files, another text hold-out) never reuses a cell fitted on the
    old one. Datasets are prepared before the grid is run. A dataset not prepared here (a report
    rebuilt on a fresh clone) is the one the committed summaries were computed on, when they
    agree on one; otherwise it says it is unprepared."""
    from itemlm.data.prepare import dataset_folder

    stats = [(str(t), t.stat()) for t in sorted(dataset_folder(dataset, config.home).glob("*.parquet"))]
    if not stats:
        return recorded_dataset_identity(config, dataset) or "data=unprepared"
    return _tables_hash(tuple((path, stat.st_size, stat.st_mtime_ns) for path, stat in stats))


DATA_IDENTITY = re.compile(r"data-sha256=[0-9a-f]+")


def recorded_dataset_identity(config: BenchConfig, dataset: str) -> str | None:
    """The dataset identity the committed summaries of `dataset` share (`data_identity`), if one."""
    summaries = sorted((config.summaries / dataset).glob("*.json"))
    return _summaries_identity(tuple((str(path), path.stat().st_mtime_ns) for path in summaries))


@functools.lru_cache(maxsize=None)  # by path and mtime: the summaries are read once per plan, not once per cell
def _summaries_identity(summaries: tuple) -> str | None:
    recorded = set()
    for path, _ in summaries:
        try:
            identity = json.loads(Path(path).read_text()).get("data_identity")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(identity, str) and DATA_IDENTITY.fullmatch(identity):
            recorded.add(identity)
    return recorded.pop() if len(recorded) == 1 else None


@functools.lru_cache(maxsize=None)  # by path, size and mtime: hashed once per run, again when a table changes
def _tables_hash(tables: tuple) -> str:
    from itemlm.data.dataset import file_sha256

    if not tables:
        return "data=unprepared"
    digest = hashlib.sha256()
    for path, _, _ in tables:
        digest.update(f"{Path(path).name}={file_sha256(path)};".encode())
    return f"data-sha256={digest.hexdigest()[:16]}"


def cell_identity(config: BenchConfig, dataset: str, preset: str) -> str:
    from itemlm.eval.stage2_eval import EVALUATION_PROTOCOL

    return f"{preset_identity(preset)},{dataset_identity(config, dataset)},eval-protocol={EVALUATION_PROTOCOL}"


def stage1_cell(config: BenchConfig, dataset: str, variant: str, seed: int, queries: int) -> Cell:
    settings = (
        f"preset={config.stage1_preset}", f"dataset={dataset}", f"variant={variant}", f"seed={seed}",
        f"qformer.num_queries={queries}", *config.stage1, *config.dataset_overrides(dataset, "stage1"),
    )
    return Cell("stage1", dataset, f"{variant}-q{queries}-s{seed}", settings, bridge=variant, seed=seed, queries=queries,
                identity=cell_identity(config, dataset, config.stage1_preset))


def stage2_cell(config: BenchConfig, dataset: str, bridge: str, seed: int, queries: int, stage1: Cell | None) -> Cell:
    base = config.base_bridge(bridge)
    recipe_bridge = "ilm" if base in PRETRAINED_BRIDGES else base
    settings = [f"preset={config.stage2_preset}", f"dataset={dataset}", f"bridge={recipe_bridge}", f"seed={seed}"]
    if base == "ilm-rand":
        settings.append(f"num_queries={queries}")
    settings += [*config.stage2, *config.per_bridge.get(base, []), *config.dataset_overrides(dataset, "stage2"),
                 *config.variants.get(bridge, {}).get("stage2", [])]
    if stage1 is not None or base == "ilm-rand":  # a Q-Former bridge
        settings += config.per_query.get(queries, [])
    if config.encoder is not None:  # SC of the models and of the floors under one encoder
        settings.append(f"sc_encoder={config.encoder}")
    label = f"{bridge}-q{queries}-s{seed}" if base in PRETRAINED_BRIDGES or base == "ilm-rand" else f"{bridge}-s{seed}"
    return Cell("stage2", dataset, label, tuple(settings), (stage1.id,) if stage1 else (), bridge=bridge, seed=seed, queries=queries,
                identity=cell_identity(config, dataset, config.stage2_preset))


def plan_cells(config: BenchConfig, datasets: list[str] | None = None) -> list[Cell]:
    """Every cell of the grid in the order it should run: per dataset the cheap in-process cells,
    then seed by seed every bridge (a stage-1 cell just before the stage-2 cell that reads it), then
    the query sweep; so an interrupted grid has whole rows. Duplicates (the sweep's default query
    count is also a bridge cell) appear once."""
    default_queries = 8
    cells: dict[str, Cell] = {}

    def add(cell: Cell) -> Cell:
        return cells.setdefault(cell.id, cell)

    for dataset in datasets if datasets is not None else config.datasets:
        sasrec = {**config.sasrec, **config.per_dataset.get(dataset, {}).get("sasrec", {})}
        add(Cell("references", dataset, "refs", (json.dumps({"references": config.references, "sasrec": sasrec}, sort_keys=True),),
                 identity=dataset_identity(config, dataset)))
        add(Cell("floors", dataset, "floors", (f"preset={config.stage2_preset}", *config.stage2, *config.dataset_overrides(dataset, "stage2"), f"encoder={config.encoder}"),
                 identity=cell_identity(config, dataset, config.stage2_preset)))
        seeds = config.for_dataset(dataset, "seeds")
        runs = [(b, s, default_queries) for s in seeds for b in config.for_dataset(dataset, "bridges") if s in config.bridge_seeds.get(b, seeds)]
        runs += [(config.sweep_variant, s, q) for s in config.sweep_seeds for q in config.for_dataset(dataset, "query_sweep")]
        for bridge, seed, queries in runs:
            if bridge == "text-only":
                seed = seeds[0]  # nothing is trained: one run stands for every seed
            base = config.base_bridge(bridge)
            stage1 = add(stage1_cell(config, dataset, base, seed, queries)) if base in PRETRAINED_BRIDGES else None
            add(stage2_cell(config, dataset, bridge, seed, queries, stage1))
    return list(cells.values())
