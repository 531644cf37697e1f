"""Statistics for comparing models: mean +- std over seeds, paired tests over examples (or over
clusters of examples about one subject).

Seeds measure training noise; the paired comparison measures evaluation noise (which examples
happened to be drawn). Both matter with the few hundred examples a CPU budget allows, so the report
prints both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap, permutation_test


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are ignored."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(array) == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


@dataclass
class PairedComparison:
    """Mean of (a - b) over paired examples, its bootstrap confidence interval and permutation p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    examples: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of a - b along an axis: the statistic both resampling procedures compute."""
    return np.mean(a - b, axis=axis)


def paired_comparison(a: np.ndarray, b: np.ndarray, *, resamples: int = 9999, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare two models' per-example scores on the same examples; returns a PairedComparison.

    The interval is scipy's paired percentile bootstrap of the mean difference (percentile rather than
    BCa: BCa's jackknife is quadratic in the number of examples and undefined when every difference is
    equal). The p-value is a two-sided paired permutation test of "a and b are exchangeable within
    each example" (each pair is swapped at random), so it is a test under the null; the smallest it can
    be is about 2 / (resamples + 1). The default 9999 resamples (scipy's) take about half a second for
    400 examples, growing linearly with the examples; the report passes its config's smaller
    `bootstrap_resamples` (2000), as it compares many pairs.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least two examples, got {len(a)}")
    batch = max(1, 2**20 // len(a))  # resamples drawn at once: memory stays tens of MB for any number of examples
    # `random_state`, not `rng`: scipy 1.15 renamed it but still accepts it, and the floor is scipy 1.11
    interval = bootstrap(
        (a, b), mean_difference, paired=True, vectorized=True, n_resamples=resamples, batch=batch,
        confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed),
    ).confidence_interval
    test = permutation_test(
        (a, b), mean_difference, permutation_type="samples", vectorized=True, n_resamples=resamples, batch=batch,
        alternative="two-sided", random_state=np.random.default_rng(seed),
    )
    return PairedComparison(
        difference=float(mean_difference(a, b)),
        low=float(interval.low),
        high=float(interval.high),
        p_value=float(test.pvalue),
        examples=len(a),
        confidence=confidence,
    )


def clustered_comparison(
    a: np.ndarray, b: np.ndarray, clusters: list[str], *, resamples: int = 9999, confidence: float = 0.95, seed: int = 0,
) -> PairedComparison:
    """`paired_comparison` for examples that come in clusters: several examples about one subject
    (an item asked about in four tasks and two phrasings, a user's four recommendation rows) are not
    independent, so both procedures resample whole clusters. The difference is still the mean over
    examples. The interval is the percentile bootstrap over clusters drawn with replacement (the
    ratio of their summed differences to their example counts); the p-value is a two-sided test that
    flips the sign of each cluster's differences together (a and b exchangeable within a subject).
    `examples` counts the examples; the clusters are what the resampling counts."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(clusters) != len(a):
        raise ValueError(f"clustered scores must be two 1-d arrays and one cluster per example, got {a.shape}, {b.shape}, {len(clusters)}")
    _, cluster = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    sums, counts = np.bincount(cluster, weights=a - b), np.bincount(cluster).astype(np.float64)
    if len(sums) < 2:
        raise ValueError(f"a clustered comparison needs at least two clusters, got {len(sums)}")
    observed = sums.sum() / counts.sum()
    rng = np.random.default_rng(seed)
    batch = max(1, 2**20 // len(sums))
    drawn, flipped = [], []
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        picks = rng.integers(0, len(sums), size=(size, len(sums)))
        drawn.append(sums[picks].sum(axis=1) / counts[picks].sum(axis=1))
        signs = rng.integers(0, 2, size=(size, len(sums))) * 2 - 1
        flipped.append((signs * sums).sum(axis=1) / counts.sum())
    drawn, flipped = np.concatenate(drawn), np.concatenate(flipped)
    tail = (1 - confidence) / 2
    low, high = np.quantile(drawn, [tail, 1 - tail])
    # as extreme as observed, with a little room for floating-point ties; +1 counts the observed arrangement
    extreme = np.sum(np.abs(flipped) >= abs(observed) * (1 - 1e-12))
    return PairedComparison(difference=float(observed), low=float(low), high=float(high), p_value=float((extreme + 1) / (resamples + 1)),
                            examples=len(a), confidence=confidence)


def align(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the examples both models answered, matched by key, in a fixed order."""
    _, x, y = aligned_keys(a, b)
    return x, y


def aligned_keys(a: dict[str, float], b: dict[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`align`, with the keys the two arrays follow."""
    keys = sorted(set(a) & set(b))
    return keys, np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
