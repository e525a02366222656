"""Self-training between loops (docs/methods/cyclic.md#self-training): confident detections, the next
pseudo set, how much it changed and when to stop.

Maps are uint16: 0 background, 1..K instances, `IGNORE_INSTANCE` ignore.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellseg.data.weak.pseudo_instances import DUPLICATE_IOU, best_overlap_iou, merge_ordered_instances
from cellseg.utils.ignore import IGNORE_INSTANCE


def next_pseudo_set(
    detections: Sequence[np.ndarray],
    relevance_label: np.ndarray,
    dedup_iou: float = DUPLICATE_IOU,
    min_area: int = 100,
) -> np.ndarray:
    """The pseudo set of the next loop: the self-training `detections` first (in the given, score order), then the
    instances of `relevance_label` in id (= rank) order, merged by `merge_ordered_instances`. The relevance map's
    ignore pixels stay ignore where no kept member covers them (a kept detection clears the ignore it covers).
    """
    relevance_label = np.asarray(relevance_label)
    ids = np.unique(relevance_label)
    ids = ids[(ids > 0) & (ids != IGNORE_INSTANCE)]
    members = [np.asarray(mask, dtype=bool) for mask in detections] + [relevance_label == i for i in ids]
    merged = merge_ordered_instances(members, relevance_label.shape, dedup_iou=dedup_iou, min_area=min_area)
    merged[(relevance_label == IGNORE_INSTANCE) & (merged == 0)] = IGNORE_INSTANCE
    return merged


def set_change(
    current: np.ndarray | Sequence[np.ndarray], previous: np.ndarray | Sequence[np.ndarray], iou: float = 0.5
) -> float:
    """Delta = 1 - object F1 of `current` against `previous`, matched at IoU > `iou` and pooled over images
    (one label map or a list per set, in the same image order); ignore pixels belong to no instance.

    At IoU > 0.5 an instance overlaps at most one other that well, so counting the instances of `current` whose
    best IoU exceeds `iou` is a one-to-one matching; hence `iou` >= 0.5. Two empty sets have Delta 0.
    """
    if not 0.5 <= float(iou) < 1.0:
        raise ValueError(f"set_change matches one-to-one by best overlap, which needs iou in [0.5, 1); got {iou!r}")
    current_maps, previous_maps = _as_maps(current), _as_maps(previous)
    if len(current_maps) != len(previous_maps):
        raise ValueError(f"set_change got {len(current_maps)} current and {len(previous_maps)} previous maps")
    matched = n_current = n_previous = 0
    for cur, prev in zip(current_maps, previous_maps, strict=True):
        if cur.shape != prev.shape:
            raise ValueError(f"pseudo labels differ in shape: {cur.shape} vs {prev.shape}")
        n_current += _n_instances(cur)
        n_previous += _n_instances(prev)
        matched += sum(1 for value in best_overlap_iou(cur, prev).values() if value > iou)
    if n_current + n_previous == 0:
        return 0.0
    return 1.0 - 2.0 * matched / (n_current + n_previous)


def should_stop(loop: int, change: float | None, eps: float = 0.02) -> bool:
    """Stop after loop n >= 2 when the pseudo set changed by Delta_n < `eps` (method.stop_eps); never at loop 1,
    which has no previous set, nor when the change is unknown (None)."""
    return int(loop) >= 2 and change is not None and float(change) < float(eps)


def _as_maps(maps: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray) and maps.ndim == 2:
        return [maps.astype(np.int64)]
    return [np.asarray(m).astype(np.int64) for m in maps]


def _n_instances(label: np.ndarray) -> int:
    ids = np.unique(label)
    return int(((ids > 0) & (ids != IGNORE_INSTANCE)).sum())
