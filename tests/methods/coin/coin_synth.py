"""Synthetic images for the COIN stage tests: H&E-like (pink background, purple nuclei) and grey variants."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage.draw import disk

SHARED_DATA = Path(os.environ.get("CELLSEG_TEST_DATA", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"))
BACKGROUND_RGB = (230, 180, 210)  # eosin pink
NUCLEUS_RGB = (90, 60, 150)  # hematoxylin purple


def disk_label(shape, specs) -> np.ndarray:
    """int32 label map, disk k (row, col, radius) gets id k + 1; later disks overwrite earlier ones."""
    label = np.zeros(shape, dtype=np.int32)
    for k, (row, col, radius) in enumerate(specs):
        label[disk((row, col), radius, shape=shape)] = k + 1
    return label


def he_image(label: np.ndarray, noise: float = 6.0, seed: int = 0) -> np.ndarray:
    """uint8 RGB: nucleus colour where label > 0, background elsewhere, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    image = np.where(label[..., None] > 0, np.array(NUCLEUS_RGB), np.array(BACKGROUND_RGB)).astype(np.float64)
    image += rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def grey_image(label: np.ndarray, fluorescence: bool, seed: int = 0) -> np.ndarray:
    """Grey RGB: bright nuclei on black (fluorescence) or dark nuclei on white (bright-field)."""
    rng = np.random.default_rng(seed)
    fg, bg = (200.0, 15.0) if fluorescence else (70.0, 225.0)
    grey = np.where(label > 0, fg, bg) + rng.normal(0.0, 5.0, label.shape)
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


SEPARATE_DISKS = [(20, 20, 8), (20, 60, 9), (60, 20, 7), (62, 62, 10), (100, 100, 8)]
TOUCHING_DISKS = [(100, 30, 10), (100, 48, 10)]  # centres 18 px apart: one blob with a neck
