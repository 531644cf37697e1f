"""Errors that describe bad input in one line; the CLI prints them and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input from the user: a file, a line or a field that is not what was expected."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.path and self.line is not None:
            where = f"{self.path}:{self.line}"
        return f"{where}: {self.message}" if where else self.message


class FieldError(InputError):
    """An InputError about one setting; `field` is its dotted name, as an override spells it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"'{field}' {message}")
