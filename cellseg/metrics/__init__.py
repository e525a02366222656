"""Instance segmentation metrics from one contingency table per image (docs/metrics.md)."""

from __future__ import annotations

from cellseg.metrics.aggregate import aggregate, check_metric_names, split_summary
from cellseg.metrics.faithful import s2l_iou_faithful, s2l_mdice_faithful
from cellseg.metrics.instance import (
    ALL_METRICS,
    CLEAN_METRICS,
    FAITHFUL_METRICS,
    STAT_FIELDS,
    ImageStats,
    image_stats,
    instance_metrics,
    metrics_from_sums,
)
from cellseg.metrics.table import ContingencyTable, contingency_table
from cellseg.metrics.torchmetric import InstanceSegMetrics, SemanticSegMetrics

__all__ = [
    "ALL_METRICS",
    "CLEAN_METRICS",
    "FAITHFUL_METRICS",
    "STAT_FIELDS",
    "ContingencyTable",
    "ImageStats",
    "InstanceSegMetrics",
    "SemanticSegMetrics",
    "aggregate",
    "check_metric_names",
    "contingency_table",
    "image_stats",
    "instance_metrics",
    "metrics_from_sums",
    "s2l_iou_faithful",
    "s2l_mdice_faithful",
    "split_summary",
]
