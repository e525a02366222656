"""Whole-image relevance maps from a tile classifier (docs/methods/cyclic.md#relevance-maps).

The image is resized by `scale` (= classifier input size / tile size, e.g. 224 / 96) so nuclei have the size the
classifier saw, split into overlapping windows (`cellseg.inference.tiler.predict_tiled` with a flat window, i.e.
plain averaging of overlaps), each window's CAM / Grad-CAM is upsampled to the window (LRP already has its
size), and the stitched map is resized back to the native size and divided by its maximum.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cellseg.inference.tiler import predict_tiled
from cellseg.models.cam_classifier import RELEVANCE_MODES, TileClassifier


def _check_arguments(image: torch.Tensor, scale: float, mode: str, window: int, overlap: int, batch_size: int) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"image has shape {shape}; expected a normalised (3, H, W) tensor")
    if not scale > 0:
        raise ValueError(f"scale={scale}; expected a positive resize factor (input_size / tile, e.g. 224 / 96)")
    if mode not in RELEVANCE_MODES:
        raise ValueError(f"mode={mode!r}; expected one of {RELEVANCE_MODES}")
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window={window}, overlap={overlap}; expected window >= 1 and 0 <= overlap < window")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")


def _window_relevance(classifier: TileClassifier, mode: str, target_class: int) -> Callable:
    """predict_fn for the tiler: (B, 3, w, w) windows -> (B, 1, w, w) relevance upsampled to the window."""

    def predict(batch: torch.Tensor) -> torch.Tensor:
        maps = classifier.relevance(batch, mode=mode, target_class=target_class)[:, None]
        return F.interpolate(maps, size=batch.shape[-2:], mode="bilinear", align_corners=False)

    return predict


def _resize(tensor: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """(C, h, w) -> (C, *size), bilinear; unchanged when the size already matches."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]


def relevance_map(
    classifier: TileClassifier,
    image: torch.Tensor,
    scale: float,
    mode: str = "cam",
    window: int = 448,
    overlap: int = 64,
    batch_size: int = 4,
    target_class: int = 1,
) -> np.ndarray:
    """Relevance of `target_class` over a whole image: float32 (H, W) in [0, 1], max 1 unless all zero.

    Args:
        classifier: a `TileClassifier`; run in eval mode on its own device (its mode is restored afterwards).
        image: (3, H, W) float, ImageNet-normalised (`to_normalised_tensor`).
        scale: resize factor applied before windowing (bilinear), e.g. 224 / 96.
        mode: `cam` (computed without autograd), `grad_cam` or `lrp` (gradients taken per window).
        window, overlap: window side and minimum overlap on the resized image (CAM 448 / 64; Grad-CAM 224 / 112).
            The last window of a row / column is flush with the border; a resized image smaller than a window is
            reflect-padded to one window and the padding cropped. Overlaps are averaged.
        batch_size: windows per forward pass.
    """
    _check_arguments(image, scale, mode, window, overlap, batch_size)
    height, width = image.shape[-2:]
    device = next(classifier.parameters()).device
    resized = _resize(image.float().to(device), (max(1, round(height * scale)), max(1, round(width * scale))))
    was_training = classifier.training
    classifier.eval()
    try:
        stitched = predict_tiled(
            _window_relevance(classifier, mode, target_class), resized, tile=window, overlap=overlap,
            taper="none", batch_size=batch_size, pad_multiple=window,
        )
    finally:
        classifier.train(was_training)
    # LRP is pixel-sharp: shrink it with antialiasing. CAM maps are smooth and keep plain bilinear (as before).
    native = _resize(torch.from_numpy(stitched), (height, width), antialias=mode == "lrp")[0]
    native = native.clamp_(min=0)  # negative relevance (LRP, bilinear overshoot) is not evidence of a nucleus
    peak = float(native.max())
    if peak > 0:
        native = native / peak
    return native.numpy().astype(np.float32, copy=False)
