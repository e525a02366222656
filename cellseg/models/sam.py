"""segment-anything point prompter for COIN's `prompter: sam` (docs/methods/coin.md#prompters).

Built only from a local checkpoint through `sam_model_registry[model_type](checkpoint=path)`; one `set_image`
per image, then the points go through the predictor's own coordinate transform in N x 1 batches and the
multimask output with the highest predicted IoU is kept per point.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import segment_anything
import torch

from cellseg import weights as weights_policy
from cellseg.data.intensity import as_uint8_rgb

MISSING_WEIGHTS = (
    "prompter: sam needs a local segment-anything checkpoint (method.prompter.weights=/path/sam_vit_b.pth); "
    "use prompter: classical offline"
)


def build_sam_predictor(
    model_type: str = "vit_b",
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    weights_sha256: str | None = None,
) -> segment_anything.SamPredictor:
    """SamPredictor for a local checkpoint (sha256 checked when given); `weights: auto` downloads Meta's file."""
    if weights is None:
        raise ValueError(MISSING_WEIGHTS)
    registry = segment_anything.sam_model_registry
    if model_type not in registry:
        raise ValueError(f"method.prompter.model_type must be one of {sorted(registry)}, got '{model_type}'")
    path, _ = weights_policy.resolve(weights, weights_sha256, auto_source=f"sam_{model_type}",
                                     config_key="method.prompter.weights")
    sam = registry[model_type](checkpoint=str(path))
    return segment_anything.SamPredictor(sam.to(device).eval())


def iter_masks_for_points(
    predictor: segment_anything.SamPredictor,
    image_rgb: np.ndarray,
    points_xy: np.ndarray,
    batch: int = 64,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Yield (slice of points, best masks bool (n, H, W), their predicted IoU (n,)) chunk by chunk."""
    image_rgb = _as_rgb_uint8(image_rgb)
    points = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
    if batch < 1:
        raise ValueError(f"method.prompter.prompt_batch must be >= 1, got {batch}")
    if len(points) == 0:
        return
    predictor.set_image(image_rgb, image_format="RGB")
    size = image_rgb.shape[:2]
    for start in range(0, len(points), batch):
        chunk = torch.as_tensor(points[start:start + batch], device=predictor.device)[:, None, :]  # (n, 1, 2)
        coords = predictor.transform.apply_coords_torch(chunk, size)
        labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=predictor.device)
        masks, ious, _ = predictor.predict_torch(coords, labels, multimask_output=True)
        best = ious.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        yield (slice(start, start + len(best)), masks[rows, best].cpu().numpy(), ious[rows, best].cpu().numpy())


def predict_masks_for_points(
    predictor: segment_anything.SamPredictor,
    image_rgb: np.ndarray,
    points_xy: np.ndarray,
    batch: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Best mask per (x, y) point: masks bool (N, H, W) and predicted IoU float32 (N,)."""
    height, width = np.asarray(image_rgb).shape[:2]
    count = len(np.asarray(points_xy).reshape(-1, 2))
    masks = np.zeros((count, height, width), dtype=bool)
    ious = np.zeros(count, dtype=np.float32)
    for where, chunk_masks, chunk_ious in iter_masks_for_points(predictor, image_rgb, points_xy, batch):
        masks[where], ious[where] = chunk_masks, chunk_ious
    return masks, ious


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """SAM takes 8-bit RGB: a float image in [0, 1] (deeper than 8 bits, cellseg/data/intensity.py) is rounded."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.floating):
        image = as_uint8_rgb(image)
    if image.ndim == 2:  # grey images are replicated, as everywhere in the project
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"SAM prompter expects an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image
