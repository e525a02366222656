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


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An image as RGB uint8 for display: grey replicated, 16-bit or float stretched between percentiles."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:  # 16-bit or float microscopy: stretch for display only
        low, high = np.percentile(image, (1, 99.8))
        image = (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(image)
