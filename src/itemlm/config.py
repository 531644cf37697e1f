"""YAML presets -> typed dataclass configs, with `key.sub=value` overrides from the command line.

A misspelled key, a value of the wrong type or out of range is an `InputError` naming the field and
the override that set it (or the file).
Presets ship inside the package (`itemlm/configs/*.yaml`) and are found by bare name.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from itemlm.errors import FieldError, InputError


class ConfigLoader(yaml.SafeLoader):
    """YAML as a config means it: only true and false are booleans (YAML 1.2), so the documented
    `mixed_precision=no` is the text "no", not YAML 1.1's False."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
SWITCH_WORDS = {"yes": True, "on": True, "no": False, "off": False}  # accepted for true/false settings


def read_yaml(text: str):
    return yaml.load(text, Loader=ConfigLoader)

T = TypeVar("T")
PRESETS = Path(__file__).parent / "configs"


def preset_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError("config file not found", path=path)
        return path
    preset = PRESETS / f"{name_or_path}.yaml"
    if not preset.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise InputError(f"no preset named '{name_or_path}' (presets: {known})")
    return preset


# Ranges by field name, for every config class: counts and sizes are at least 1, rates and
# weights are positive; every other number is non-negative (no itemlm setting takes a negative).
AT_LEAST_ONE = {
    "batch_size", "checkpoint_every", "log_every", "max_target_tokens", "max_text_tokens", "history_length",
    "num_queries", "mlp_tokens", "random_qformer_layers", "ce_chunk_rows", "eval_beams", "factors", "iterations",
    "candidates", "history", "anchor_batch_size", "hidden", "layers", "heads", "max_length", "epochs",
}
POSITIVE = {"learning_rate", "head_learning_rate", "alpha", "grad_clip", "adapter_lr_scale", "temperature"}


def _check_range(value: Any, where: str) -> None:
    name = where.rsplit(".", 1)[-1]
    if name in AT_LEAST_ONE and value < 1:
        raise FieldError(where, f"must be at least 1, got {value!r}")
    if name in POSITIVE and value <= 0:
        raise FieldError(where, f"must be positive, got {value!r}")
    if value < 0:
        raise FieldError(where, f"must not be negative, got {value!r}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise FieldError(where, f"must be a mapping of its settings, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except InputError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise FieldError(where, f"has the wrong type: {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise FieldError(where, f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise FieldError(where, f"must be a mapping, got {value!r}")
        return value
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise FieldError(where, f"must be a list, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool):
            raise FieldError(where, f"must be a number, got {value!r}")
        try:
            value = float(value)  # YAML reads "3e-4" (no dot) as a string
        except (TypeError, ValueError):
            raise FieldError(where, f"must be a number, got {value!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise FieldError(where, f"must be a finite number, got {value!r}")
        _check_range(value, where)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(where, f"must be a whole number, got {value!r}")
        _check_range(value, where)
        return value
    if annotation is bool and isinstance(value, str) and value.lower() in SWITCH_WORDS:
        return SWITCH_WORDS[value.lower()]
    if annotation in (str, bool) and not isinstance(value, annotation):
        raise FieldError(where, f"must be {'true or false' if annotation is bool else 'text'}, got {value!r}")
    return value


def from_dict(cls: type[T], values: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        key = sorted(unknown, key=str)[0]  # YAML reads `on:` or `1:` as a bool or int key
        raise FieldError(f"{where + '.' if where else ''}{key}", f"is not a setting (known: {', '.join(sorted(names))})")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in values:
            raise FieldError(f"{where + '.' if where else ''}{name}", "is required")
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in values.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"override '{text}' is not key=value (e.g. steps=100 or qformer.num_queries=4)")
    try:
        return key.split("."), read_yaml(raw)
    except yaml.YAMLError as error:
        raise InputError(f"override '{text}': the value is not valid YAML ({getattr(error, 'problem', None) or 'unreadable'})") from None


def read_config_file(path: Path) -> dict:
    """One YAML config file as a mapping, without resolving its `base`."""
    try:
        values = read_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text (byte {error.start})", path=path) from None
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        raise InputError(f"not valid YAML: {getattr(error, 'problem', error)}", path=path, line=None if line is None else line + 1) from None
    if not isinstance(values, dict):
        raise InputError("a config must be a YAML mapping", path=path)
    return values


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` laid over it: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_files(name_or_path: str | Path) -> list[tuple[Path, dict]]:
    """The files a config is read from, each read once, with its settings (`base` taken out): the file
    itself, then its `base` (a preset name, or a YAML path relative to the file), then that file's base..."""
    path = preset_path(name_or_path)
    files: list[tuple[Path, dict]] = []
    while True:
        values = read_config_file(path)
        base = values.pop("base", None)
        files.append((path, values))
        if base is None:
            return files
        if not isinstance(base, str) or not base:
            raise InputError(f"base must name a preset or a YAML file, got {base!r}", path=path)
        relative = path.parent / base
        try:
            following = preset_path(relative if relative.suffix in (".yaml", ".yml") and relative.is_file() else base)
        except InputError as error:
            raise InputError(f"base '{base}': {error}", path=path) from None
        if following.resolve() in {seen.resolve() for seen, _ in files}:
            raise InputError(f"base '{base}' leads back to a file already in this config's chain", path=path)
        path = following


def config_chain(name_or_path: str | Path) -> list[Path]:
    """The paths of `config_files`, the named file first."""
    return [path for path, _ in config_files(name_or_path)]


def read_config_chain(name_or_path: str | Path) -> dict:
    """A config's settings: its base chain's files laid over one another, the named file last."""
    values: dict = {}
    for _, settings in reversed(config_files(name_or_path)):
        values = merged(values, settings)
    return values


def load_config(cls: type[T], name_or_path: str | Path, overrides: list[str] | None = None) -> T:
    """The config of a preset (a name or a YAML file, which may start from another with `base:`)
    with `key.sub=value` overrides applied.

    Errors name the override when an override set the bad field, else the file.
    """
    path = preset_path(name_or_path)
    values = read_config_chain(path)
    defaults = default_values(cls)
    given: dict[str, str] = {}
    for override in overrides or []:
        keys, value = parse_override(override)
        target = values
        if len(keys) > 1 and keys[0] not in values and isinstance(defaults.get(keys[0]), dict):
            # one entry of a mapping the preset leaves at its default (`task_weights.explanation=2`) is
            # laid over that default, not a mapping of its own
            values[keys[0]] = copy.deepcopy(defaults[keys[0]])
        for depth, key in enumerate(keys[:-1]):
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                group = ".".join(keys[: depth + 1])
                raise InputError(f"override '{override}': '{group}' is a single setting, not a group of settings")
        target[keys[-1]] = value
        given[".".join(keys)] = override
    try:
        return from_dict(cls, values)
    except InputError as error:
        field = getattr(error, "field", None)
        source = next((text for key, text in given.items() if field and (field == key or field.startswith(key + ".") or key.startswith(field + "."))), None)
        if source is not None:
            raise InputError(f"override '{source}': {error.message}") from None
        raise InputError(error.message, path=path) from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def default_values(cls: type) -> dict:
    """Each setting's default, as `to_dict` would write it, without building (and so validating) a
    whole config: a recipe's defaults need not form a valid run on their own."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            continue
        values[field.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return values
