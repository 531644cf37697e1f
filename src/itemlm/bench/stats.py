"""Statistics for comparing models: mean +- std over seeds, paired bootstrap over examples.

Seeds measure training noise; the bootstrap measures evaluation noise (which examples happened to
be drawn). Both matter with the few hundred examples a CPU budget allows, so the report prints both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are ignored."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(array) == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


@dataclass
class PairedComparison:
    """Mean of (a - b) over paired examples, its bootstrap confidence interval and two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    examples: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Resample examples with replacement; a and b are per-example scores of two models on the same examples.

    The p-value is the bootstrap estimate of a two-sided test of "no difference": twice the share of
    resampled mean differences on the other side of zero from the observed one (at most 1).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("no paired examples to compare")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    observed = float(diff.mean())
    if observed > 0:
        p = 2 * np.mean(means <= 0)
    elif observed < 0:
        p = 2 * np.mean(means >= 0)
    else:
        p = 1.0
    return PairedComparison(
        difference=observed,
        low=float(np.quantile(means, tail)),
        high=float(np.quantile(means, 1 - tail)),
        p_value=float(min(1.0, max(p, 1.0 / resamples))),
        examples=len(diff),
        confidence=confidence,
    )


def align(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the examples both models answered, matched by key, in a fixed order."""
    keys = sorted(set(a) & set(b))
    return np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
