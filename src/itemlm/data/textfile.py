"""Reading source files so that every failure is one InputError naming the file and the line.

Every loader reads through these functions: a missing or empty file, a broken .gz or a byte that
is not valid text never surfaces as a traceback.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from itemlm.errors import InputError

def checked_file(path: str | Path) -> Path:
    """The path, if it names a non-empty file; otherwise the InputError a person should see."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if not path.is_file():
        raise InputError("expected a file, found a folder or something else", path=path)
    if path.stat().st_size == 0:
        raise InputError("the file is empty", path=path)
    return path


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline) of a UTF-8 file, plain or .gz.

    Streams, so a multi-gigabyte review dump never sits in memory as one string.
    """
    path = checked_file(path)
    lineno = 0
    try:
        with _open_binary(path) as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise InputError(
                        f"byte 0x{raw[error.start]:02x} at column {error.start + 1} is not valid UTF-8; "
                        "expected UTF-8 text",
                        path=path,
                        line=lineno,
                    ) from None
                if lineno == 1:
                    text = text.removeprefix("\ufeff")
                yield lineno, text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"could not read the file ({error})", path=path, line=lineno + 1) from None


def read_text_file(path: str | Path, encodings: tuple[str, ...] = ("utf-8",)) -> str:
    """The whole file as text, trying each encoding in turn (GroupLens files are latin-1)."""
    path = checked_file(path)
    try:
        with _open_binary(path) as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"could not read the file ({error})", path=path) from None
    first_error = None
    for encoding in encodings:
        try:
            return data.decode(encoding).removeprefix("\ufeff")
        except UnicodeDecodeError as error:
            first_error = first_error or error
    line = data.count(b"\n", 0, first_error.start) + 1
    raise InputError(
        f"byte 0x{data[first_error.start]:02x} cannot be decoded; expected {' or '.join(encodings)} text",
        path=path,
        line=line,
    )


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs split on newlines only: str.splitlines would also split on
    characters like U+0085 that latin-1 text can contain inside a title."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        yield lineno, line.rstrip("\r")
