"""Overlays of instance outlines on an image, for logging and for a person to look at."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

PRED_COLOUR = (255, 40, 40)
GT_COLOUR = (40, 255, 40)


def overlay_instances(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 image with predicted outlines in red and ground-truth outlines (if given) in green."""
    out = image.copy()
    if gt is not None:
        out[find_boundaries(gt, mode="inner")] = GT_COLOUR
    out[find_boundaries(pred, mode="inner")] = PRED_COLOUR
    return out


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    height = max(img.shape[0] for img in images)
    padded = [np.pad(img, ((0, height - img.shape[0]), (0, gap), (0, 0)), constant_values=255) for img in images]
    return np.concatenate(padded, axis=1)
