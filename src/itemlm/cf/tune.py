"""Choose MF hyperparameters on validation: a small grid, each point scored by validation HR@10.

The choice follows the one-standard-error rule (Hastie, Tibshirani and Friedman, ESL 7.10): the
smallest model (fewest factors) whose validation HR@10 is within one standard error of the best,
and the best of those. On ML-100K's 943 validation users one standard error is about 0.012, more
than most differences inside the grid, and the plain maximum there picks a larger model that fits
the noise; on Beauty's 22,363 it is about 0.002. Test targets are never read here.

A grid's scores are cached beside the MF vectors of the same training data (`split_folder`),
under a key made of the algorithm, the grid, the seed and the validation targets: running it again
is instant, and another split or version of the data never gets stale scores.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from itemlm.cf.mf import MFConfig, split_folder, train_mf
from itemlm.data.splits import Split
from itemlm.errors import InputError
from itemlm.cf.evaluate import evaluate_ranking
from itemlm.io import atomic_write_text

METRIC = "HR@10"  # what ranks the grid; NDCG@10 breaks ties, then the grid order

# Measured on ML-100K and Beauty (docs/benchmarks.md): for ALS the confidence weight alpha and the
# dimension matter most (ML-100K likes alpha 1-3, Beauty 10-30 and 256 factors); ALS converges in
# 10-20 sweeps, so one iteration count is enough. BPR is SGD: epochs and step size are what matter.
GRIDS: dict[str, dict[str, list]] = {
    "als": {"factors": [64, 128, 256], "regularization": [0.1, 1.0], "alpha": [1.0, 3.0, 10.0, 30.0], "iterations": [15]},
    "bpr": {"factors": [64, 128], "learning_rate": [0.01, 0.05], "regularization": [0.01], "iterations": [50, 150]},
}


@dataclass
class TuneResult:
    """The chosen config and every grid point's validation scores (in grid order)."""

    best: MFConfig
    rows: list[dict]  # {"config": MFConfig.cache_key(), "valid": {"HR@10", "NDCG@10", "users"}, "seconds": fit seconds}

    def ranked(self) -> list[dict]:
        """The rows by validation score, best first."""
        order = sorted(range(len(self.rows)), key=lambda i: _rank_key(self.rows[i], i))
        return [self.rows[i] for i in order]


def _rank_key(row: dict, index: int) -> tuple:
    return (-row["valid"][METRIC], -row["valid"]["NDCG@10"], index)


def choose(rows: list[dict]) -> int:
    """Index of the chosen row: fewest factors within one standard error of the best, then best."""
    top = rows[min(range(len(rows)), key=lambda i: _rank_key(rows[i], i))]["valid"]
    floor = top[METRIC] - math.sqrt(top[METRIC] * (1 - top[METRIC]) / max(1, top["users"]))
    eligible = [i for i, row in enumerate(rows) if row["valid"][METRIC] >= floor]
    return min(eligible, key=lambda i: (rows[i]["config"]["factors"], *_rank_key(rows[i], i)))


def grid_configs(algorithm: str, grid: dict[str, list], *, seed: int = 0, num_threads: int = 0) -> list[MFConfig]:
    # BPR's lock-free SGD is only reproducible on one thread; ALS is with any count
    threads = num_threads if algorithm == "als" else 1
    names = list(grid)
    return [
        MFConfig(algorithm=algorithm, seed=seed, num_threads=threads, **dict(zip(names, values)))
        for values in itertools.product(*(grid[name] for name in names))
    ]


def run_grid(split: Split, configs: list[MFConfig], *, progress: bool = False) -> TuneResult:
    """Fit each config on the training interactions and score it on the validation targets."""
    if len(split.valid) == 0:
        raise InputError("this split has no validation targets to tune on")
    if not configs:
        raise InputError("the tuning grid is empty")
    rows: list[dict] = []
    bar = tqdm(configs, desc=f"tune {configs[0].algorithm}", disable=not progress, unit="fit")
    for config in bar:
        started = time.perf_counter()
        embeddings = train_mf(split, config)
        seconds = time.perf_counter() - started
        metrics = evaluate_ranking(embeddings.score, split, "valid", ks=(10,)).metrics
        rows.append({
            "config": config.cache_key(),
            "valid": {METRIC: metrics[METRIC], "NDCG@10": metrics["NDCG@10"], "users": int(metrics["users"])},
            "seconds": round(seconds, 2),
        })
        bar.set_postfix({f"best {METRIC}": f"{max(r['valid'][METRIC] for r in rows):.4f}"})
    return _result(rows, num_threads=configs[0].num_threads)


def _result(rows: list[dict], *, num_threads: int) -> TuneResult:
    return TuneResult(best=MFConfig(**rows[choose(rows)]["config"], num_threads=num_threads), rows=rows)


def tune_mf(
    split: Split,
    algorithms: tuple[str, ...] | list[str] = ("als",),
    *,
    dataset: str,
    home: str | Path | None = None,
    seed: int = 0,
    num_threads: int = 0,
    grids: dict[str, dict[str, list]] | None = None,
    progress: bool = True,
) -> TuneResult:
    """The best config over the grids of `algorithms`, each grid run once per training data and cached."""
    grids = grids or GRIDS
    unknown = [a for a in algorithms if a not in grids]
    if unknown or not algorithms:
        raise InputError(f"no tuning grid for '{','.join(unknown)}': expected one or more of {', '.join(grids)}")
    rows: list[dict] = []
    for algorithm in algorithms:
        key = {
            "algorithm": algorithm,
            "grid": {name: list(values) for name, values in grids[algorithm].items()},
            "seed": seed,
            "metric": METRIC,
            "data": split.fingerprint(with_validation=True),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        cache = split_folder(split, dataset, home) / f"tune-{algorithm}-s{seed}-{digest}.json"
        cached = _read_cache(cache, key)
        if cached is None:
            configs = grid_configs(algorithm, grids[algorithm], seed=seed, num_threads=num_threads)
            cached = run_grid(split, configs, progress=progress).rows
            saved = {"dataset": dataset, "split": split.strategy, "key": key, "rows": cached}
            atomic_write_text(cache, json.dumps(saved, indent=1))
        rows += cached
    return _result(rows, num_threads=num_threads)


def _read_cache(path: Path, key: dict) -> list[dict] | None:
    """The cached rows, or None when absent, unreadable or made for another key (then it is rerun)."""
    try:
        saved = json.loads(path.read_text())
        return saved["rows"] if saved["key"] == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tuned_config(split: Split, config: MFConfig, *, dataset: str, home: str | Path | None = None) -> MFConfig:
    """`config` with the hyperparameters chosen on validation for its algorithm and seed."""
    threads = config.num_threads
    result = tune_mf(split, (config.algorithm,), dataset=dataset, home=home, seed=config.seed, num_threads=threads)
    return replace(result.best, num_threads=threads, tuned=True)
