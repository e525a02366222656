"""COIN stage 1a with a ViT (docs/methods/coin.md#vit-features): window token grids, block-wise dense features.

Per image and zoom z, square windows of side w = floor(min(H, W) / z) (stride floor(2w/3), last window flush
with the border) are upsampled x z (bicubic), ImageNet-normalised, resized (bicubic) up to the next multiple of
the patch size and encoded; the token grid of block `layer` (after the final norm) is kept per window in fp16
(hflip and extra scales averaged in). Dense per-pixel features are never materialised for the whole image:
`blocks` rebuilds them block by block, upsampling (bilinear, align_corners=False, exactly as
`F.interpolate`) only the part of each overlapping window that falls in the block, averaging overlaps and
L2-normalising each pixel.

`VitFeatures` is the `method/features=vit` node: the ViT is built (and its weights read) on first use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cellseg.data.intensity import as_uint8_rgb
from cellseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cellseg.methods.coin.features import ImageFeatures
from cellseg.models import vit as vit_models
from cellseg.models.vit import vit_token_grid

log = logging.getLogger(__name__)

NORM_EPS = 1e-12  # torch.nn.functional.normalize default
TOKEN_CACHES = ("none", "tokens")


def window_starts(length: int, side: int) -> list[int]:
    """0, s, 2s, ... while start + side < length, then one window flush with the end (s = floor(2 side / 3))."""
    if side < 1 or side > length:
        raise ValueError(f"window side {side} does not fit an axis of length {length}")
    stride = max(1, (2 * side) // 3)
    starts = list(range(0, length, stride))
    starts = [s for s in starts if s + side < length]
    if not starts or starts[-1] != length - side:
        starts.append(length - side)
    return starts


def window_origins(height: int, width: int, zoom: int) -> tuple[int, list[tuple[int, int]]]:
    """(side, [(row, col) of each window]) for an image and a zoom (81 windows at zoom 6 on square images)."""
    side = min(height, width) // int(zoom)
    if side < 1:
        raise ValueError(f"features.zooms: zoom {zoom} leaves no window on a {height} x {width} image")
    return side, [(r, c) for r in window_starts(height, side) for c in window_starts(width, side)]


def bilinear_weights(in_size: int, out_size: int, start: int, stop: int) -> torch.Tensor:
    """(stop - start, in_size) matrix of `F.interpolate(bilinear, align_corners=False)` output rows start..stop."""
    scale = in_size / out_size
    src = np.maximum((np.arange(start, stop) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    weights = np.zeros((stop - start, in_size), dtype=np.float64)
    rows = np.arange(stop - start)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return torch.from_numpy(weights.astype(np.float32))


@dataclass
class WindowTokens:
    """Token grids (n_windows, D, gh, gw) fp16 of one image at one zoom, with the windows they came from."""

    shape: tuple[int, int]
    side: int
    origins: list[tuple[int, int]]
    grids: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.grids.shape[1])

    def state(self) -> dict:
        return {"shape": list(self.shape), "side": self.side, "origins": self.origins, "grids": self.grids}

    @classmethod
    def from_state(cls, state: dict) -> WindowTokens:
        return cls(tuple(state["shape"]), int(state["side"]), [tuple(o) for o in state["origins"]], state["grids"])


class VitFeatureExtractor:
    """Window token grids of a timm ViT and the block-wise dense features built from them."""

    def __init__(
        self,
        model: torch.nn.Module,
        zooms: tuple[int, ...] = (6,),
        hflip: bool = True,
        scales: tuple[float, ...] = (1.0,),
        layer: int = 11,
        block: int = 256,
        device: str | torch.device = "cpu",
        window_batch: int = 8,
    ) -> None:
        if block < 1:
            raise ValueError(f"features.block must be >= 1, got {block}")
        self.model = model.to(device).eval()
        self.zooms, self.hflip, self.scales = [int(z) for z in zooms], bool(hflip), [float(s) for s in scales]
        self.layer, self.block, self.device, self.window_batch = int(layer), int(block), device, int(window_batch)
        self.patch = int(model.patch_embed.patch_size[0])
        self.dim = int(model.embed_dim)

    # ----- tokens ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def window_tokens(self, image_rgb: np.ndarray, zoom: int) -> WindowTokens:
        height, width = image_rgb.shape[:2]
        side, origins = window_origins(height, width, zoom)
        image = torch.from_numpy(np.ascontiguousarray(as_uint8_rgb(image_rgb))).permute(2, 0, 1).float().div(255.0)
        grids = []
        for start in range(0, len(origins), self.window_batch):
            crops = torch.stack([image[:, r:r + side, c:c + side] for r, c in origins[start:start + self.window_batch]])
            grids.append(self._encode(crops.to(self.device), zoom).half().cpu())
        return WindowTokens((height, width), side, origins, torch.cat(grids))

    def _encode(self, crops: torch.Tensor, zoom: int) -> torch.Tensor:
        """(n, 3, w, w) in [0, 1] -> (n, D, gh, gw): x zoom bicubic, normalise, bicubic to a patch multiple."""
        side = crops.shape[-1]
        x = F.interpolate(crops, size=(side * zoom, side * zoom), mode="bicubic", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        base = self._patch_multiple(side * zoom)
        x = F.interpolate(x, size=(base, base), mode="bicubic", align_corners=False)
        grid = self._tokens_with_flip(x)
        for scale in self.scales:
            if scale == 1.0:
                continue
            size = self._patch_multiple(base * scale)
            scaled = self._tokens_with_flip(F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False))
            grid = grid + F.interpolate(scaled, size=grid.shape[-2:], mode="bilinear", align_corners=False)
        n_terms = 1 + sum(1 for s in self.scales if s != 1.0)
        return grid / n_terms

    def _tokens_with_flip(self, x: torch.Tensor) -> torch.Tensor:
        grid = vit_token_grid(self.model, x, layer=self.layer).float()
        if self.hflip:
            flipped = vit_token_grid(self.model, torch.flip(x, dims=[-1]), layer=self.layer).float()
            grid = 0.5 * (grid + torch.flip(flipped, dims=[-1]))
        return grid

    def _patch_multiple(self, size: float) -> int:
        return max(self.patch, int(math.ceil(size / self.patch)) * self.patch)

    # ----- dense features, block by block ----------------------------------------------------------------------
    def blocks(self, tokens: WindowTokens) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """(rows, cols, float32 (D, h, w) L2-normalised features) for every `block` x `block` tile of the image."""
        height, width = tokens.shape
        for r0 in range(0, height, self.block):
            for c0 in range(0, width, self.block):
                rows, cols = slice(r0, min(r0 + self.block, height)), slice(c0, min(c0 + self.block, width))
                yield rows, cols, assemble_block(tokens, rows, cols, self.device).cpu().numpy()


def assemble_block(tokens: WindowTokens, rows: slice, cols: slice, device: str | torch.device = "cpu") -> torch.Tensor:
    """Mean over the windows covering each pixel of their bilinearly upsampled token grids, L2-normalised
    (computed on `device`; the fp16 grids stay where they are and only the overlapping ones are moved)."""
    n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
    total = torch.zeros(tokens.dim, n_rows, n_cols, device=device)
    count = torch.zeros(n_rows, n_cols, device=device)
    side = tokens.side
    grid_h, grid_w = tokens.grids.shape[-2:]
    for (r0, c0), grid in zip(tokens.origins, tokens.grids, strict=True):
        top, bottom = max(rows.start, r0), min(rows.stop, r0 + side)
        left, right = max(cols.start, c0), min(cols.stop, c0 + side)
        if top >= bottom or left >= right:
            continue
        weights_r = bilinear_weights(grid_h, side, top - r0, bottom - r0).to(device)
        weights_c = bilinear_weights(grid_w, side, left - c0, right - c0).to(device)
        rows_done = torch.einsum("rh,dhw->drw", weights_r, grid.to(device).float())
        part = torch.einsum("drw,cw->drc", rows_done, weights_c)
        total[:, top - rows.start:bottom - rows.start, left - cols.start:right - cols.start] += part
        count[top - rows.start:bottom - rows.start, left - cols.start:right - cols.start] += 1
    mean = total / count.clamp_min(1)
    return F.normalize(mean, dim=0, eps=NORM_EPS)


class VitFeatures:
    """`method/features=vit`: window token grids of a timm ViT per zoom, dense features rebuilt block by block.

    The arguments are checked here; the network (`cellseg.models.vit.build_vit` of `arch`, `weights`,
    `weights_sha256`, `timm_kwargs`) is built on first use, on `device` (`auto` = CUDA when available).
    `cache: tokens` keeps the token grids of pass 1 for pass 2 (`propagate_0/tokens/`).
    """

    needs_stats = False

    def __init__(
        self,
        arch: str = "vit_base_patch16_224",
        weights: str | None = None,
        weights_sha256: str | None = None,
        timm_kwargs: dict | None = None,
        zooms: list[int] | tuple[int, ...] = (6,),
        hflip: bool = True,
        scales: list[float] | tuple[float, ...] = (1.0,),
        layer: int = 11,
        block: int = 256,
        cache: str = "none",
        device: str = "auto",
        window_batch: int = 8,
    ) -> None:
        if not zooms or any(not _is_int(z) or z < 1 for z in zooms):
            raise ValueError(f"method.features.zooms={list(zooms)}; expected positive integers")
        if not scales or any(not isinstance(s, (int, float)) or s <= 0 for s in scales):
            raise ValueError(f"method.features.scales={list(scales)}; expected positive numbers")
        for key, value in (("block", block), ("window_batch", window_batch)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"method.features.{key}={value!r}; expected an integer >= 1")
        if not _is_int(layer):
            raise ValueError(f"method.features.layer={layer!r}; expected a block index (-1 = last)")
        if cache not in TOKEN_CACHES:
            raise ValueError(f"method.features.cache={cache!r}; expected one of {TOKEN_CACHES}")
        if not weights:
            log.warning("method/features=vit without method.features.weights: random ViT features, "
                        "plumbing tests only")
        self.arch, self.weights, self.weights_sha256 = arch, weights, weights_sha256
        self.timm_kwargs = dict(timm_kwargs or {})
        self.zooms, self.hflip, self.scales = tuple(zooms), bool(hflip), tuple(scales)
        self.layer, self.block, self.window_batch = int(layer), int(block), int(window_batch)
        self.cache_tokens = cache == "tokens"
        self.device = device
        self._extractor: VitFeatureExtractor | None = None

    @property
    def extractor(self) -> VitFeatureExtractor:
        if self._extractor is None:
            model = vit_models.build_vit(self.arch, weights=self.weights, weights_sha256=self.weights_sha256,
                                         **self.timm_kwargs)
            device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
            self._extractor = VitFeatureExtractor(model, zooms=self.zooms, hflip=self.hflip, scales=self.scales,
                                                  layer=self.layer, block=self.block, device=device,
                                                  window_batch=self.window_batch)
        return self._extractor

    @property
    def dim(self) -> int:
        return self.extractor.dim

    def update_stats(self, image_rgb: np.ndarray) -> None:  # nothing to fit
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def image_features(self, image_rgb: np.ndarray, tokens: list[WindowTokens] | None = None) -> ImageFeatures:
        extractor = self.extractor
        if tokens is None:
            tokens = [extractor.window_tokens(image_rgb, zoom) for zoom in extractor.zooms]
        return ImageFeatures(len(tokens), lambda zoom: extractor.blocks(tokens[zoom]), tokens)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
