"""Dataset-level aggregation (docs/metrics.md#aggregation): per-image means over defined images and pooled ratios."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cellseg.metrics.instance import (
    ALL_METRICS,
    CLEAN_METRICS,
    FAITHFUL_METRICS,
    STAT_FIELDS,
    ImageStats,
    metrics_from_sums,
)


def check_metric_names(names: Iterable[str] | None) -> tuple[str, ...]:
    """Requested metric names in order (default: every clean metric); unknown names raise one ValueError."""
    if names is None:
        return CLEAN_METRICS
    names = tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric names {unknown}; expected some of {list(ALL_METRICS)}")
    return names


def needs_faithful(names: Iterable[str]) -> bool:
    return any(name in FAITHFUL_METRICS for name in names)


def as_image_stats(item: ImageStats | Mapping[str, float]) -> ImageStats:
    return item if isinstance(item, ImageStats) else ImageStats.from_row(item)


def aggregate(per_image: Sequence[ImageStats | Mapping[str, float]],
              names: Iterable[str] | None = None) -> dict[str, float]:
    """Flat summary: `<name>` (mean over images where defined), `<name>_n_undefined`, `<name>_pooled`.

    Pooled values apply the per-image formulas to the dataset sums (faithful S2L metrics have no pooled form:
    they keep their own per-image mean). `n_images` counts the images.
    """
    stats = [as_image_stats(item) for item in per_image]
    names = check_metric_names(names)
    totals = {name: math.fsum(s.sums()[name] for s in stats) for name in STAT_FIELDS}
    pooled = metrics_from_sums(totals)
    summary: dict[str, float] = {"n_images": len(stats)}
    for name in names:
        values = np.array([_value_of(s, name) for s in stats], dtype=np.float64)
        defined = values[~np.isnan(values)]
        summary[name] = float(defined.mean()) if defined.size else math.nan
        summary[f"{name}_n_undefined"] = int(values.size - defined.size)
        if name in pooled:
            summary[f"{name}_pooled"] = pooled[name]
    return summary


def _value_of(stats: ImageStats, name: str) -> float:
    if name not in stats.values:
        raise ValueError(f"per-image values lack '{name}'; compute them with that metric requested")
    return float(stats.values[name])


def split_summary(summary: Mapping[str, float], names: Iterable[str]) -> dict[str, dict[str, float]]:
    """The flat summary as {"per_image_mean": ..., "pooled": ..., "n_undefined": ...} keyed by metric name."""
    names = tuple(names)
    return {
        "per_image_mean": {name: summary[name] for name in names},
        "pooled": {name: summary[f"{name}_pooled"] for name in names if f"{name}_pooled" in summary},
        "n_undefined": {name: int(summary[f"{name}_n_undefined"]) for name in names},
    }
