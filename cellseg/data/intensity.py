"""Per-image intensity stretch between two percentiles, so dim and bright images of a set look alike.

Fluorescence images differ in exposure by an order of magnitude (DSB2018: mean grey level 4 to 60); the usual
remedy in nuclei segmentation (StarDist, Cellpose) is to map each image's low/high percentiles to 0/1. Here the
stretch works on the uint8 RGB image, before augmentation and the ImageNet normalisation, over all channels
at once (a colour image keeps its hues).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_stretch(percentiles: Sequence[float] | None, key: str = "data.stretch_percentiles") -> tuple[float, float] | None:
    """(low, high) percentiles, or None for no stretch; one clear error otherwise."""
    if percentiles is None:
        return None
    values = tuple(float(v) for v in percentiles)
    if len(values) != 2 or not 0.0 <= values[0] < values[1] <= 100.0:
        raise ValueError(f"{key}={list(percentiles)}; expected null or [low, high] with 0 <= low < high <= 100")
    return values


def stretch_intensity(image: np.ndarray, percentiles: tuple[float, float] | None) -> np.ndarray:
    """uint8 image with its `percentiles` mapped to 0 and 255 (clipped); unchanged when None or flat."""
    if percentiles is None:
        return image
    low, high = np.percentile(image, percentiles)
    if high <= low:  # a flat image has nothing to stretch
        return image
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
