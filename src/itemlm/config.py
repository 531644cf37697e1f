"""YAML presets -> typed dataclass configs, with `key.sub=value` overrides from the command line.

A misspelled key or a value of the wrong type is an `InputError` naming the file and the field.
Presets ship inside the package (`itemlm/configs/*.yaml`) and are found by bare name.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from itemlm.errors import InputError

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


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise InputError(f"'{where}' must be a mapping")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except InputError:
                continue
        raise InputError(f"'{where}' has the wrong type: {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"'{where}' must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (dict, list, tuple):
        return value
    if annotation is float and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads "3e-4" (no dot) as a string
        except (TypeError, ValueError):
            raise InputError(f"'{where}' must be a number, got {value!r}") from None
    if annotation in (int, str, bool) and not isinstance(value, annotation):
        raise InputError(f"'{where}' must be {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], values: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        key = sorted(unknown)[0]
        raise InputError(f"unknown field '{where + '.' if where else ''}{key}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in values.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise InputError(f"override '{text}' is not key=value (e.g. steps=100 or qformer.num_queries=4)")
    return key.split("."), yaml.safe_load(raw)


def load_config(cls: type[T], name_or_path: str | Path, overrides: list[str] | None = None) -> T:
    path = preset_path(name_or_path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        raise InputError(f"not valid YAML: {getattr(error, 'problem', error)}", path=path, line=None if line is None else line + 1) from None
    if not isinstance(values, dict):
        raise InputError("a config must be a YAML mapping", path=path)
    for override in overrides or []:
        keys, value = parse_override(override)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    try:
        return from_dict(cls, values)
    except InputError as error:
        raise InputError(error.message, path=path) from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
