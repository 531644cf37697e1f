"""Atomic writes (a crash at any moment leaves either the old file or folder, or the new one) and
safe reads (a broken file is one InputError naming it)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from itemlm.errors import InputError


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- reading what itemlm wrote
# Every loader reads through these, so an empty, truncated or foreign file is one InputError that
# names it, never a library's traceback.

def _unreadable(path: Path, what: str, error: Exception) -> InputError:
    detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return InputError(f"not a readable {what} ({detail})", path=path)


def read_json(path: str | Path, what: str = "JSON file"):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing {what}", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _unreadable(path, what, error) from None


def read_safetensors(path: str | Path, what: str = "safetensors file", *, framework: str = "pt", device: str = "cpu") -> dict:
    """The tensors of a .safetensors file (torch tensors, or numpy arrays with framework="np")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing {what}", path=path)
    try:
        if framework == "np":
            from safetensors.numpy import load_file

            return load_file(str(path))
        from safetensors.torch import load_file

        return load_file(str(path), device=device)
    except Exception as error:  # safetensors raises its own SafetensorError, OSError or ValueError
        raise _unreadable(path, what, error) from None


def read_parquet(path: str | Path, what: str = "Parquet table"):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing {what}", path=path)
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow's ArrowInvalid, OSError, ...
        raise _unreadable(path, what, error) from None
