"""Pseudo-instance crops -> torchvision detection targets (boxes, labels, masks) and ignore boxes."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from cellseg.utils.ignore import IGNORE_INSTANCE


def instance_target(raw: np.ndarray | None, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """`datamodule.configure_targets` transform: a pseudo-instance map (uint16, `IGNORE_INSTANCE` ignore) kept as
    int64; an image without a pseudo label trains as all ignore (nothing is taught there)."""
    if raw is None:
        return np.full(shape, IGNORE_INSTANCE, dtype=np.int64)
    if kind != "instance":
        raise ValueError(f"the Cyclic detector trains on instance maps; got a {kind!r} target")
    return raw.astype(np.int64)


def detection_target(label: torch.Tensor, min_area: int = 4) -> dict[str, torch.Tensor]:
    """One (h, w) int64 crop of a pseudo-instance map -> a torchvision Mask R-CNN target.

    Every instance id (0 background, `IGNORE_INSTANCE` ignore) with at least `min_area` pixels in the crop gives
    a box (x0, y0, x1, y1 with exclusive ends, so a one-pixel instance has a positive extent), label 1 and its
    mask; every connected ignore region gives an `ignore_boxes` row (read by the ignore-aware samplers).
    """
    array = label.detach().cpu().numpy()
    ids, counts = np.unique(array[(array > 0) & (array != IGNORE_INSTANCE)], return_counts=True)
    kept = ids[counts >= min_area]
    masks = np.stack([array == i for i in kept]) if kept.size else np.zeros((0, *array.shape), dtype=bool)
    ignore_regions, _ = ndi.label(array == IGNORE_INSTANCE)
    device = label.device
    return {
        "boxes": torch.as_tensor(mask_boxes(masks), dtype=torch.float32, device=device),
        "labels": torch.ones(len(kept), dtype=torch.int64, device=device),
        "masks": torch.as_tensor(masks, dtype=torch.uint8, device=device),
        "ignore_boxes": torch.as_tensor(region_boxes(ignore_regions), dtype=torch.float32, device=device),
    }


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy boxes (exclusive ends) of N boolean masks."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def region_boxes(regions: np.ndarray) -> np.ndarray:
    """(K, 4) xyxy boxes (exclusive ends) of the labelled regions of a map."""
    slices = [s for s in ndi.find_objects(regions) if s is not None]
    return np.array([(c.start, r.start, c.stop, r.stop) for r, c in slices], dtype=np.float32).reshape(-1, 4)
