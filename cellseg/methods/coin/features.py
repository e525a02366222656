"""Stage 1a of COIN, offline default (docs/methods/coin.md#features): 21 per-pixel colour/texture features.

Channels (in this order): H&E optical densities (3, rgb2hed), CIE Lab (3), Gaussian of the stain channel at
sigma 1, 2, 4 (3) and of L at sigma 1, 2, 4 (3), scale-normalised LoG of the stain channel at sigma 2, 3, 4 (3),
gradient magnitude of the stain channel at sigma 1, 2 (2), structure-tensor eigenvalues of the stain channel at
sigma 1, 2 (4). Grey images use the intensity-based stain channel in place of every OD, Lab and stain channel.
Features are z-scored with training-set running statistics, then L2-normalised per pixel.

`HandcraftedFeatures` is the `method/features=handcrafted` node; it and `vit_features.VitFeatures` are the two
feature sources of the propagation stage: `image_features(image)` yields an image's normalised features block by
block (`ImageFeatures`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import color
from skimage.feature import structure_tensor, structure_tensor_eigenvalues

from cellseg.methods.coin.ucis import (
    as_float_rgb,
    check_stain,
    rescale_percentiles,
    resolve_stain,
    stain_channel,
)

SMOOTH_SIGMAS = (1.0, 2.0, 4.0)
LOG_SIGMAS = (2.0, 3.0, 4.0)
GRADIENT_SIGMAS = (1.0, 2.0)
TENSOR_SIGMAS = (1.0, 2.0)
FEATURE_NAMES = (
    ["od_h", "od_e", "od_d", "lab_l", "lab_a", "lab_b"]
    + [f"stain_gauss_{s:g}" for s in SMOOTH_SIGMAS]
    + [f"l_gauss_{s:g}" for s in SMOOTH_SIGMAS]
    + [f"stain_log_{s:g}" for s in LOG_SIGMAS]
    + [f"stain_gradmag_{s:g}" for s in GRADIENT_SIGMAS]
    + [f"stain_tensor_{s:g}_{k}" for s in TENSOR_SIGMAS for k in ("major", "minor")]
)
N_FEATURES = len(FEATURE_NAMES)  # 21


def handcrafted_features(image_rgb: np.ndarray, grey: bool | None = None, stain: str = "auto") -> np.ndarray:
    """float32 (21, H, W) raw features (FEATURE_NAMES order).

    `grey=None` decides by colour like `ucis.resolve_stain`; `stain` picks the stain channel (`auto`: hematoxylin
    for colour images, intensity or inverted intensity for grey ones).
    """
    rgb = as_float_rgb(image_rgb)
    resolved = resolve_stain(image_rgb, stain)
    if grey is None:
        grey = resolved != "hematoxylin"
    if grey:
        # a colour image forced to grey is read as bright-field: dark nuclei
        signal = stain_channel(rgb, "inverted_intensity" if resolved == "hematoxylin" else resolved)
        colour = [signal] * 6
        lightness = signal
    else:
        od = color.rgb2hed(rgb).astype(np.float32)
        lab = color.rgb2lab(rgb).astype(np.float32)
        signal = rescale_percentiles(od[..., 0])
        colour = [od[..., 0], od[..., 1], od[..., 2], lab[..., 0], lab[..., 1], lab[..., 2]]
        lightness = lab[..., 0]
    channels = colour + _smoothed(signal) + _smoothed(lightness) + _texture(signal)
    return np.stack(channels).astype(np.float32, copy=False)


def _smoothed(channel: np.ndarray) -> list[np.ndarray]:
    return [ndi.gaussian_filter(channel, s, mode="reflect") for s in SMOOTH_SIGMAS]


def _texture(signal: np.ndarray) -> list[np.ndarray]:
    """Blob (LoG, sign flipped so bright blobs are positive), edge and orientation-coherence responses."""
    blobs = [-(s**2) * ndi.gaussian_laplace(signal, s, mode="reflect") for s in LOG_SIGMAS]
    edges = [ndi.gaussian_gradient_magnitude(signal, s, mode="reflect") for s in GRADIENT_SIGMAS]
    tensor = []
    for s in TENSOR_SIGMAS:
        major, minor = structure_tensor_eigenvalues(structure_tensor(signal, sigma=s, mode="reflect"))
        tensor += [major.astype(np.float32), minor.astype(np.float32)]
    return blobs + edges + tensor


class RunningChannelStats:
    """Per-channel mean/variance over pixels, accumulated image by image in float64 (Chan et al. merge)."""

    def __init__(self, n_channels: int = N_FEATURES) -> None:
        self.count = 0
        self.mean = np.zeros(n_channels, dtype=np.float64)
        self.m2 = np.zeros(n_channels, dtype=np.float64)

    def update(self, feats: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add the pixels of `feats` (D, H, W) (only where `mask` is true, if given)."""
        flat = self._pixels(feats, mask)
        n = flat.shape[1]
        if n == 0:
            return
        batch_mean = flat.mean(axis=1)
        batch_m2 = ((flat - batch_mean[:, None]) ** 2).sum(axis=1)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def var(self) -> np.ndarray:
        """Population variance (ddof 0)."""
        if self.count == 0:
            raise ValueError("RunningChannelStats is empty: call update() on at least one image first")
        return self.m2 / self.count

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def state_dict(self) -> dict:
        return {"count": int(self.count), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> RunningChannelStats:
        stats = cls(len(state["mean"]))
        stats.count = int(state["count"])
        stats.mean = np.asarray(state["mean"], dtype=np.float64)
        stats.m2 = np.asarray(state["m2"], dtype=np.float64)
        return stats

    def _pixels(self, feats: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if feats.ndim != 3 or feats.shape[0] != self.mean.shape[0]:
            raise ValueError(f"features have shape {feats.shape}; expected ({self.mean.shape[0]}, H, W)")
        flat = feats.reshape(feats.shape[0], -1)
        if mask is not None:
            flat = flat[:, np.asarray(mask, dtype=bool).ravel()]
        return flat.astype(np.float64)


def normalise_features(feats: np.ndarray, stats: RunningChannelStats, eps: float = 1e-6) -> np.ndarray:
    """float32 (D, H, W): each channel z-scored with `stats`, then each pixel's vector scaled to unit L2 norm."""
    mean = stats.mean.astype(np.float32)[:, None, None]
    std = np.maximum(stats.std, eps).astype(np.float32)[:, None, None]
    z = (feats.astype(np.float32) - mean) / std
    norm = np.sqrt(np.einsum("dhw,dhw->hw", z, z))
    return z / np.maximum(norm, eps)[None]


Block = tuple[slice, slice, np.ndarray]  # (rows, cols, float32 (D, h, w) normalised features of that block)


@dataclass
class ImageFeatures:
    """Normalised features of one image, per zoom, produced block by block (`blocks(zoom_index)`)."""

    n_zooms: int
    blocks: Callable[[int], Iterator[Block]]
    tokens: list[Any] | None = None  # ViT only: the WindowTokens that `features.cache: tokens` stores


class HandcraftedFeatures:
    """`method/features=handcrafted`: 21 channels z-scored with training statistics (pass 0), L2-normalised per
    pixel; `stain` is `method.stain`."""

    needs_stats = True
    cache_tokens = False

    def __init__(self, stain: str = "auto") -> None:
        check_stain(stain)
        self.stain = stain
        self.stats: RunningChannelStats | None = None

    @property
    def dim(self) -> int:
        return int(len(self.stats.mean)) if self.stats is not None else N_FEATURES

    def update_stats(self, image_rgb: np.ndarray) -> None:
        feats = handcrafted_features(image_rgb, stain=self.stain)
        self.stats = self.stats or RunningChannelStats(feats.shape[0])
        self.stats.update(feats)

    def state_dict(self) -> dict:
        return {"stats": self.stats.state_dict() if self.stats is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.stats = RunningChannelStats.from_state_dict(state["stats"]) if state["stats"] else None

    def image_features(self, image_rgb: np.ndarray, tokens: list | None = None) -> ImageFeatures:
        if self.stats is None:
            raise RuntimeError("handcrafted features need the training statistics (pass 0) first")
        feats = normalise_features(handcrafted_features(image_rgb, stain=self.stain), self.stats)
        whole = (slice(0, feats.shape[1]), slice(0, feats.shape[2]), feats)
        return ImageFeatures(1, lambda zoom: iter([whole]))
