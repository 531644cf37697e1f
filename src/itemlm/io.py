"""Atomic writes (a crash at any moment leaves either the old file or folder, or the new one) and
safe reads (a broken file is one InputError naming it)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from itemlm.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` for text, in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, never a part;
    the new file gets the permissions of a plain `open` (the umask's), and is on disk when this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@functools.lru_cache(maxsize=1)
def _renameat2():
    """libc's renameat2, looked up once; None where the C library has none."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = _renameat2()
    at_fdcwd, rename_exchange = -100, 2
    return renameat2 is not None and renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _sync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                fd = os.open(Path(root) / name, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_folder(Path(root))


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final`, on error it is removed.

    The swap is one atomic exchange where the OS has it (Linux), so there is no moment without a
    complete `final`, and two writers each swap in a complete folder (the last one stays). Elsewhere
    the old folder is moved aside first; a `.NAME.old-*` left by a crash in that gap is put back
    the next time. The staged files are on disk before the swap; the folder gets the umask's
    permissions, not a temporary folder's private ones.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    leftovers = sorted(p / "folder" for p in final.parent.glob(f".{final.name}.old-*") if (p / "folder").is_dir())
    if not final.exists() and leftovers:  # a crash between the two renames of the fallback below
        os.replace(leftovers[-1], final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        _sync_tree(staging)
        if final.exists() and _exchange(staging, final):
            shutil.rmtree(staging, ignore_errors=True)  # staging now holds the previous folder
        else:
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                os.replace(final, old / "folder")
            try:
                os.replace(staging, final)
            except OSError:
                if not final.exists() or old is None:
                    raise
                # another writer put a complete folder there in the meantime: it stays
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        _fsync_folder(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ---------------------------------------------------------------- reading what itemlm wrote
# Every loader reads through these, so an empty, truncated or foreign file is one InputError that
# names it, never a library's traceback.

def _unreadable(path: Path, what: str, error: Exception) -> InputError:
    detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return InputError(f"not a readable {what} ({detail})", path=path)


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing {what}", path=path)
    return path


def read_json(path: str | Path, what: str = "JSON file"):
    path = _existing(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _unreadable(path, what, error) from None


def read_json_object(path: str | Path, what: str = "JSON file") -> dict:
    """`read_json` for files that must hold one JSON object (a config, a manifest, a record)."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise InputError(f"{what} must hold a JSON object, not {type(value).__name__}", path=path)
    return value


def read_safetensors(path: str | Path, what: str = "safetensors file", *, framework: str = "pt", device: str = "cpu") -> dict:
    """The tensors of a .safetensors file (torch tensors, or numpy arrays with framework="np")."""
    path = _existing(path, what)
    try:
        if framework == "np":
            from safetensors.numpy import load_file

            return load_file(str(path))
        from safetensors.torch import load_file

        return load_file(str(path), device=device)
    except Exception as error:  # safetensors raises its own SafetensorError, OSError or ValueError
        raise _unreadable(path, what, error) from None


def read_parquet(path: str | Path, what: str = "Parquet table"):
    path = _existing(path, what)
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow's ArrowInvalid, OSError, ...
        raise _unreadable(path, what, error) from None


def folder_digest(folder: str | Path) -> str:
    """SHA-256 over a folder's file names and contents (sorted): equal digests, equal folders."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
