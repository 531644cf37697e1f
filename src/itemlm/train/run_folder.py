"""Who owns a run folder: a recipe never trains over another run's checkpoints and results by accident.

A folder that already holds a run (config.json, checkpoints or metrics) is refused unless the
caller says what it wants: `resume` continues it, and only with the same settings (a changed key
is an error that lists the differences, unless the key is in `may_change`, e.g. `steps`);
`overwrite` deletes the earlier run's checkpoints and results first. Either way the folder's
config.json then describes the run that is writing there.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from itemlm.errors import InputError
from itemlm.io import atomic_write_text

RUN_OUTPUTS = (
    "checkpoints", "model", "metrics.jsonl", "metrics.json", "per_example.json", "curves.png",
    "anchor_targets.safetensors", "anchor_targets.tmp", "evaluation-parts",
)
"""What a recipe writes into its folder besides config.json (all removed by `overwrite`)."""


def flatten(values: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: one entry per setting, as overrides name them."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "task_weights":
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_changes(saved: dict, wanted: dict, may_change: Iterable[str] = (), defaults: dict | None = None) -> list[str]:
    """'key: old -> new' for each setting that differs, except keys (or key prefixes) in `may_change`,
    and keys the saved run lacks that `wanted` leaves at their value in `defaults` (settings added to
    itemlm after the run was saved: the run behaved as their default)."""
    # all through JSON: a tuple compares equal to the list it was saved as
    old, new, base = (flatten(json.loads(json.dumps(values))) for values in (saved, wanted, defaults or {}))
    allowed = tuple(may_change)

    def is_allowed(key: str) -> bool:
        return any(key == a or key.startswith(a + ".") for a in allowed) or (key not in old and key in base and new.get(key) == base[key])

    missing = object()
    return [
        f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}".replace(repr(missing), "(unset)")
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing) and not is_allowed(key)
    ]


def holds_run(folder: Path) -> bool:
    return (folder / "config.json").exists() or any((folder / name).exists() for name in RUN_OUTPUTS)


def same_run(folder: Path, config: dict) -> bool:
    """Whether `folder` holds a run with exactly these settings."""
    path = Path(folder) / "config.json"
    try:
        return path.exists() and not config_changes(json.loads(path.read_text()), config)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def claim_run_folder(
    folder: Path, config: dict, *, resume: bool = False, overwrite: bool = False, may_change: Iterable[str] = (), defaults: dict | None = None,
) -> None:
    """Make `folder` this run's, or raise an InputError saying why not and what to pass.
    defaults: the settings' default values (a setting the saved run lacks is no change at its default)."""
    folder = Path(folder)
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: pick one")
    if holds_run(folder):
        if not (resume or overwrite):
            raise InputError("this folder already holds a run: pass --resume to continue it or --overwrite to start it over "
                             "(its checkpoints and results are then deleted)", path=folder)
        if overwrite:
            for name in RUN_OUTPUTS:
                target = folder / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif (folder / "config.json").exists():
            try:
                saved = json.loads((folder / "config.json").read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InputError(f"the saved config.json is not valid JSON ({error}); --overwrite starts the run over", path=folder) from None
            changes = config_changes(saved, config, may_change, defaults)
            if changes:
                raise InputError(
                    "--resume with other settings than the saved run's: " + "; ".join(changes[:8])
                    + (f" (and {len(changes) - 8} more)" if len(changes) > 8 else "")
                    + ". Pass --allow-change KEY for each key meant to change, or --overwrite", path=folder,
                )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
