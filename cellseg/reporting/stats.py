"""Statistics of a group of runs: mean ± sample sd over seeds, a bootstrap interval over test images, and a
paired Wilcoxon signed-rank test of per-image scores against a reference group."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon


def mean_sd(values: list[float]) -> tuple[float, float]:
    """(mean, sample sd with ddof=1); sd is NaN for a single value (one seed says nothing about spread)."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def per_image_means(tables: list[pd.DataFrame], metric: str) -> pd.Series:
    """Per test image, the metric averaged over the group's seeds (images every seed scored)."""
    columns = [t.set_index("id")[metric].rename(i) for i, t in enumerate(tables)]
    return pd.concat(columns, axis=1, join="inner").mean(axis=1).dropna()


def bootstrap_interval(values: pd.Series, level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over test images (seeded: the same report every time)."""
    array = values.to_numpy(dtype=float)
    if array.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(resamples, array.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_wilcoxon(values: pd.Series, reference: pd.Series) -> tuple[float, int]:
    """(two-sided p, number of paired images) of per-image scores against the reference's on the same images;
    p is NaN with fewer than 2 pairs or when every difference is zero."""
    a, b = values.align(reference, join="inner")
    differences = (a - b).to_numpy(dtype=float)
    if differences.size < 2 or np.allclose(differences, 0):
        return math.nan, int(differences.size)
    return float(wilcoxon(a.to_numpy(), b.to_numpy()).pvalue), int(differences.size)
