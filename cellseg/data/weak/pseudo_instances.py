"""Instance-set pseudo-labels shared by the weak methods: merging two sets (or masks in priority order) without
duplicates, compact ids.

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


def merge_ordered_instances(
    masks: list[np.ndarray], shape: tuple[int, int], dedup_iou: float = DUPLICATE_IOU, min_area: int = 100
) -> np.ndarray:
    """uint16 label of boolean instance masks merged in priority order (first = highest), no ignore pixels.

    A mask becomes a member only if its IoU with every current member's whole mask is < `dedup_iou`; it then owns
    its pixels that no earlier member owns, and is dropped (not a member) when fewer than `min_area` remain.
    Member ids 1..n follow the order.
    """
    shape = tuple(int(v) for v in shape)
    if not 0.0 < float(dedup_iou) <= 1.0:
        raise ValueError(f"dedup_iou must be in (0, 1] (an IoU at which a mask is a duplicate); got {dedup_iou!r}")
    if int(min_area) < 0:
        raise ValueError(f"min_area must be an int >= 0 (px); got {min_area!r}")
    out = np.zeros(shape, dtype=np.uint16)
    members: list[tuple[tuple[int, int, int, int], np.ndarray]] = []  # (bbox, mask crop), for cheap IoUs
    for index, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise ValueError(f"mask {index} has shape {mask.shape}; expected {shape}")
        box = _bbox(mask)
        if box is None:
            continue
        crop = mask[box[0] : box[2], box[1] : box[3]]
        if any(_crop_iou(box, crop, *member) >= dedup_iou for member in members):
            continue
        window = out[box[0] : box[2], box[1] : box[3]]
        free = crop & (window == 0)  # pixels owned by an earlier member stay with it
        if int(free.sum()) < min_area:
            continue
        if len(members) + 1 >= IGNORE:
            raise ValueError(f"more than {IGNORE - 1} instances do not fit a uint16 pseudo label")
        members.append((box, crop))
        window[free] = len(members)
    return out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(min_row, min_col, max_row, max_col) of a boolean mask, max exclusive; None when empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    return int(r0), int(c0), int(r1) + 1, int(c1) + 1


def _crop_iou(box_a, crop_a: np.ndarray, box_b, crop_b: np.ndarray) -> float:
    """IoU of two masks given as bbox crops."""
    r0, c0 = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    r1, c1 = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    if r0 >= r1 or c0 >= c1:
        return 0.0
    part_a = crop_a[r0 - box_a[0] : r1 - box_a[0], c0 - box_a[1] : c1 - box_a[1]]
    part_b = crop_b[r0 - box_b[0] : r1 - box_b[0], c0 - box_b[1] : c1 - box_b[1]]
    inter = int(np.count_nonzero(part_a & part_b))
    return inter / (int(crop_a.sum()) + int(crop_b.sum()) - inter)
