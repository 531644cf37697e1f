"""Numbers and tables as the report's markdown writes them."""

from __future__ import annotations

import numpy as np


def fmt(value: tuple | float | None, digits: int = 3) -> str:
    """A number, or a (mean, std, seeds) tuple as "mean ± std" (the mean alone for one seed); "-" when missing."""
    if value is None:
        return "-"
    if isinstance(value, tuple):
        mean, std, n = value
        if n == 0 or not np.isfinite(mean):
            return "-"
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def p_text(p: float, resamples: int) -> str:
    """A p-value; at the smallest a two-sided permutation test with this many resamples gives, "≤ that"."""
    floor = 2 / (resamples + 1)
    return f"≤ {floor:.4f}" if p <= floor + 1e-12 else f"{p:.4f}"
