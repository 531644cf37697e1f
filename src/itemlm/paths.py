"""Where itemlm keeps prepared data, models and caches, and where packaged assets live."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from itemlm.errors import InputError


def data_home(override: str | Path | None = None) -> Path:
    """The data folder: an explicit override, else $ITEMLM_HOME, else ~/.cache/itemlm."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("ITEMLM_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "itemlm"


def package_folder(package: str, install_hint: str) -> Path:
    """Folder of an installed asset package, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package '{package}' is not installed; install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def embedded_ml100k_folder() -> Path:
    """MovieLens-100K as shipped in the recbole wheel (RecBole atomic files)."""
    folder = package_folder("recbole", "pip install --no-deps recbole==1.2.1") / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        raise InputError("the installed recbole wheel has no dataset_example/ml-100k", path=folder)
    return folder


def shared_data_folder() -> Path | None:
    """The reference data folder ../shared/data beside the project checkout, when present."""
    env = os.environ.get("ITEMLM_SHARED_DATA")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parents[2]
    candidates += [root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None
