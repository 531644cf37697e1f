"""Which CF vectors a Q-Former was pre-trained on, so that stage 2 feeds it the very same ones.

A Q-Former learns to read one particular set of MF vectors: another factorization of the same data
(other hyperparameters, a tuned one, another width) puts the items in other coordinates, and the
pre-trained alignment no longer applies. Stage 1 writes `cf_vectors.json` beside its model; stage 2
compares the vectors it loaded with it and stops when they differ, naming both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from itemlm.cf.mf import CFEmbeddings
from itemlm.errors import InputError
from itemlm.io import atomic_write_text, read_json_object

FILE = "cf_vectors.json"


def cf_identity(cf: CFEmbeddings) -> dict:
    """What decides the vectors: the data they were fitted on and the settings that fitted them."""
    return {"dataset": cf.dataset, "split": cf.split, "train_fingerprint": cf.train_fingerprint, "dim": cf.dim, "mf": cf.config.cache_key()}


def write_cf_identity(folder: str | Path, cf: CFEmbeddings) -> None:
    atomic_write_text(Path(folder) / FILE, json.dumps(cf_identity(cf), indent=2) + "\n")


def describe(identity: dict) -> str:
    mf = identity.get("mf") or {}
    settings = ", ".join(f"{k} {mf[k]}" for k in ("factors", "iterations", "regularization", "alpha") if k in mf)
    return f"{mf.get('algorithm', '?')} on {identity.get('dataset') or '?'} ({settings})"


def check_same_cf(model_folder: str | Path, cf: CFEmbeddings) -> None:
    """Stop when `cf` is not the set of vectors the model in `model_folder` was trained on.

    A model saved before stage 1 kept this record cannot be checked: a warning says so."""
    path = Path(model_folder) / FILE
    if not path.exists():
        print(f"warning: {model_folder} does not say which CF vectors it was pre-trained on ({FILE} is missing); "
              "stage 2 cannot check that it reads the same ones", file=sys.stderr)
        return
    trained, given = read_json_object(path, "CF vectors record"), cf_identity(cf)
    if {k: trained.get(k) for k in given} != given:
        raise InputError(
            f"the stage-1 model was pre-trained on other CF vectors ({describe(trained)}) than this run reads "
            f"({describe(given)}); give both stages the same `mf` settings (e.g. mf.tuned=true in each) or the same cf_model",
            path=path,
        )
