"""Instance-set pseudo-labels shared by the weak methods: merging two sets without duplicates, compact ids.

Maps are uint16: 0 background, 1..K instances, `IGNORE_INSTANCE` (65535) pixels that are neither.
"""

from __future__ import annotations

import numpy as np

from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

DUPLICATE_IOU = 0.5  # a new instance overlapping an earlier one at this IoU or more is a duplicate


def merge_instance_sets(previous: np.ndarray, new: np.ndarray, iou: float = DUPLICATE_IOU) -> np.ndarray:
    """The union of two pseudo-instance sets, duplicates dropped (COIN: P_t from P_{t-1} and this round's P).

    Earlier accepted instances are all kept (painted last, so they win overlaps; ids 1..K_old); a new accepted
    instance is added only if its IoU with every earlier one is < `iou`; the pixels of a dropped duplicate not
    covered by its earlier instance become ignore. Background and ignore elsewhere follow this round's P.
    """
    if previous.shape != new.shape:
        raise ValueError(f"pseudo labels differ in shape: {previous.shape} vs {new.shape}")
    previous, new = previous.astype(np.int64), new.astype(np.int64)
    best = best_overlap_iou(new, previous)
    new_ids = [int(i) for i in np.unique(new) if 0 < i < IGNORE]
    old_ids = [int(i) for i in np.unique(previous) if 0 < i < IGNORE]
    new_lut = np.zeros(IGNORE + 1, dtype=np.int64)
    new_lut[IGNORE] = IGNORE
    for rank, instance_id in enumerate(new_ids, start=1):
        new_lut[instance_id] = len(old_ids) + rank if best.get(instance_id, 0.0) < iou else IGNORE
    out = new_lut[new]
    old = (previous > 0) & (previous != IGNORE)
    old_lut = np.zeros(IGNORE + 1, dtype=np.int64)
    old_lut[old_ids] = np.arange(1, len(old_ids) + 1)
    out[old] = old_lut[previous[old]]
    return compact_pseudo_ids(out)


def best_overlap_iou(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """For each instance id of `a` (ignore excluded), its highest IoU with an instance of `b`."""
    valid_a, valid_b = (a > 0) & (a != IGNORE), (b > 0) & (b != IGNORE)
    area_a = np.bincount(np.where(valid_a, a, 0).ravel())
    area_b = np.bincount(np.where(valid_b, b, 0).ravel())
    both = valid_a & valid_b
    if not both.any():
        return {}
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    best: dict[int, float] = {}
    for (ia, ib), count in zip(pairs.T, inter, strict=True):
        value = count / (area_a[ia] + area_b[ib] - count)
        best[int(ia)] = max(best.get(int(ia), 0.0), float(value))
    return best


def compact_pseudo_ids(label: np.ndarray) -> np.ndarray:
    """uint16 map with instance ids renumbered 1..K in their order, background 0 and ignore kept."""
    ids = np.unique(label)
    ids = ids[(ids > 0) & (ids != IGNORE)]
    if len(ids) >= IGNORE:
        raise ValueError(f"{len(ids)} instances do not fit a uint16 pseudo label (max {IGNORE - 1})")
    out = np.zeros(label.shape, dtype=np.uint16)
    out[label == IGNORE] = IGNORE
    valid = (label > 0) & (label != IGNORE)
    out[valid] = np.searchsorted(ids, label[valid]) + 1
    return out
