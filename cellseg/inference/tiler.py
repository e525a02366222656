"""Tiled dense prediction with a tapered, normalised blend (cellpose style; docs/framework.md#tiled-inference).

Tiles of `tile` px overlap by at least `overlap` px; the last tile of a row or column is flush with the image
border, so every tile has the same shape and tiles batch together. An axis no longer than `tile` is processed
whole: it is reflect-padded at its end to the next multiple of `pad_multiple` (what the network's strides need)
and the padding is cropped from the output. Each tile's output is weighted by a strictly positive window and
the weighted sum is divided by the summed weights, so a pixel covered by one tile gets exactly that tile's value.
`predict_tiled_multiscale` averages tiled predictions of resized copies of the image (test-time augmentation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

PredictFn = Callable[[torch.Tensor], torch.Tensor]
TAPERS = ("cosine", "none")


@dataclass(frozen=True)
class TileGrid:
    """Tile origins (row, col) on the padded image, all tiles of shape `tile_shape`."""

    image_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    tile_shape: tuple[int, int]
    origins: tuple[tuple[int, int], ...]

    def windows(self) -> Iterator[tuple[slice, slice]]:
        th, tw = self.tile_shape
        for row, col in self.origins:
            yield slice(row, row + th), slice(col, col + tw)


def check_tiling(tile: int, overlap: int, batch_size: int = 1, pad_multiple: int = 32, key: str = "") -> None:
    """One error naming the bad tiling setting (`key` prefixes the names, e.g. `method.module.inference.`)."""
    if pad_multiple < 1 or tile < 1 or tile % pad_multiple:
        raise ValueError(f"{key}tile={tile} must be a positive multiple of pad_multiple={pad_multiple}")
    if not 0 <= overlap < tile:
        raise ValueError(f"{key}overlap={overlap}; expected 0 <= overlap < tile={tile}")
    if batch_size < 1:
        raise ValueError(f"{key}batch_size={batch_size}; expected >= 1")


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size `tile` covering [0, length): stride tile - overlap, last tile flush."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n_tiles = math.ceil((length - tile) / stride) + 1
    return sorted({min(i * stride, length - tile) for i in range(n_tiles)})


def tile_grid(
    height: int, width: int, tile: int = 512, overlap: int = 128, pad_multiple: int = 32
) -> TileGrid:
    """The tiles `predict_tiled` runs; an axis <= `tile` is one tile padded up to a multiple of `pad_multiple`."""
    if height < 1 or width < 1:
        raise ValueError(f"image of size {height} x {width}; expected at least 1 x 1")
    check_tiling(tile, overlap, pad_multiple=pad_multiple)
    tile_shape, padded_shape, starts = [], [], []
    for length in (height, width):
        size = tile if length > tile else pad_multiple * math.ceil(length / pad_multiple)
        tile_shape.append(size)
        padded_shape.append(max(length, size))
        starts.append(_axis_starts(length, tile, overlap))
    origins = tuple((r, c) for r in starts[0] for c in starts[1])
    return TileGrid((height, width), tuple(padded_shape), tuple(tile_shape), origins)


def taper_window(shape: tuple[int, int], overlap: int, taper: str = "cosine") -> np.ndarray:
    """Strictly positive float32 weights: a raised-cosine ramp over `overlap` px at each side, 1 inside.

    The ramp samples sin^2 at pixel centres, so its smallest value sin^2(pi / (4 ramp)) stays above 0 and
    image borders (covered by one tile) stay defined.
    """
    if taper not in TAPERS:
        raise ValueError(f"taper={taper!r}; expected one of {TAPERS}")
    axes = []
    for size in shape:
        ramp = min(overlap, size // 2)
        weights = np.ones(size, dtype=np.float64)
        if taper == "cosine" and ramp > 0:
            rising = np.sin(0.5 * np.pi * (np.arange(ramp) + 0.5) / ramp) ** 2
            weights[:ramp] = rising
            weights[size - ramp :] = rising[::-1]
        axes.append(weights)
    return np.outer(axes[0], axes[1]).astype(np.float32)


def _reflect_pad(image: torch.Tensor, pad_bottom: int, pad_right: int) -> torch.Tensor:
    """Reflect-pad a (C, H, W) tensor at the bottom/right, reflecting repeatedly when the pad exceeds the size."""
    while pad_bottom > 0 or pad_right > 0:
        height, width = image.shape[-2:]
        step_h = min(pad_bottom, height - 1)
        step_w = min(pad_right, width - 1)
        if (pad_bottom and step_h == 0) or (pad_right and step_w == 0):
            # A 1-px axis has nothing to reflect: repeat it once, then reflection can continue.
            rep_h, rep_w = int(pad_bottom > 0 and height == 1), int(pad_right > 0 and width == 1)
            image = F.pad(image[None], (0, rep_w, 0, rep_h), mode="replicate")[0]
            pad_bottom, pad_right = pad_bottom - rep_h, pad_right - rep_w
            continue
        image = F.pad(image[None], (0, step_w, 0, step_h), mode="reflect")[0]
        pad_bottom, pad_right = pad_bottom - step_h, pad_right - step_w
    return image


def _predict_batch(predict_fn: PredictFn, batch: torch.Tensor, hflip: bool) -> np.ndarray:
    out = _checked_call(predict_fn, batch)
    if hflip:
        flipped = _checked_call(predict_fn, torch.flip(batch, dims=[-1]))
        out = 0.5 * (out + torch.flip(flipped, dims=[-1]))
    return out.detach().float().cpu().numpy()


def _checked_call(predict_fn: PredictFn, batch: torch.Tensor) -> torch.Tensor:
    out = predict_fn(batch)
    expected = (batch.shape[0], batch.shape[2], batch.shape[3])
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or (out.shape[0], *out.shape[2:]) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"predict_fn returned {shape} for a batch of shape {tuple(batch.shape)}; expected a tensor "
            f"(B, K, h, w) = ({expected[0]}, K, {expected[1]}, {expected[2]})"
        )
    return out


def _as_image_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"image has shape {shape}; expected a (C, H, W) tensor")
    return image


@torch.no_grad()
def predict_tiled(
    predict_fn: PredictFn,
    image: torch.Tensor | np.ndarray,
    tile: int = 512,
    overlap: int = 128,
    taper: str = "cosine",
    batch_size: int = 4,
    hflip: bool = False,
    pad_multiple: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Stitched (K, H, W) float32 numpy probabilities of a (C, H, W) image.

    `predict_fn` maps a (B, C, h, w) batch (on the image's device and dtype) to (B, K, h, w) probabilities.
    With `hflip`, each tile's prediction is averaged with the prediction of the mirrored tile, mirrored back.
    """
    image = _as_image_tensor(image)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")
    height, width = image.shape[-2:]
    grid = tile_grid(height, width, tile=tile, overlap=overlap, pad_multiple=pad_multiple)
    padded = _reflect_pad(image, grid.padded_shape[0] - height, grid.padded_shape[1] - width)
    window = taper_window(grid.tile_shape, overlap, taper)
    weight_sum = np.zeros(grid.padded_shape, dtype=np.float32)
    accumulator: np.ndarray | None = None
    windows = list(grid.windows())
    batches = range(0, len(windows), batch_size)
    for start in tqdm(batches, desc="tiles", unit="batch", disable=not progress):
        chunk = windows[start : start + batch_size]
        outputs = _predict_batch(
            predict_fn, torch.stack([padded[:, rows, cols] for rows, cols in chunk]), hflip
        )
        if accumulator is None:
            accumulator = np.zeros((outputs.shape[1], *grid.padded_shape), dtype=np.float32)
        elif outputs.shape[1] != accumulator.shape[0]:
            raise ValueError(
                f"predict_fn returned {outputs.shape[1]} channels, earlier {accumulator.shape[0]}"
            )
        for (rows, cols), output in zip(chunk, outputs, strict=True):
            accumulator[:, rows, cols] += output * window
            weight_sum[rows, cols] += window
    accumulator /= weight_sum
    return np.ascontiguousarray(accumulator[:, :height, :width])


def check_scales(scales, key: str = "scales") -> None:
    """One error unless `scales` is a non-empty list of positive resize factors."""
    try:
        values = [float(scale) for scale in scales]
    except (TypeError, ValueError):
        values = []
    if not values or min(values) <= 0:
        raise ValueError(f"{key}={scales!r}; expected a non-empty list of positive resize factors, e.g. [1.0]")


@torch.no_grad()
def predict_tiled_multiscale(
    predict_fn: PredictFn,
    image: torch.Tensor | np.ndarray,
    scales=(1.0,),
    **tiled,
) -> np.ndarray:
    """(K, H, W) float32 probabilities averaged over `scales`: the image bilinearly resized by each factor,
    predicted by `predict_tiled(predict_fn, resized, **tiled)` and resized back to (H, W).

    Scales [1.0] is `predict_tiled` itself, bit for bit; the average sums the scales in the given order.
    """
    check_scales(scales)
    image = _as_image_tensor(image)
    if [float(scale) for scale in scales] == [1.0]:
        return predict_tiled(predict_fn, image, **tiled)
    height, width = image.shape[-2:]
    total = None
    for scale in scales:
        scaled = image
        if scale != 1.0:
            scaled = F.interpolate(scaled[None], scale_factor=float(scale), mode="bilinear", align_corners=False)[0]
        probs = torch.from_numpy(predict_tiled(predict_fn, scaled, **tiled))
        if probs.shape[-2:] != (height, width):
            probs = F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        total = probs if total is None else total + probs
    return (total / len(scales)).numpy()
