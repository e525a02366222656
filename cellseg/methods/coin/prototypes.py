"""Stage 1b of COIN (A3.1-A3.3, docs/methods/coin.md#prototypes-and-heatmaps): class prototypes, cosine heatmaps and their normalisation.

Features are (D, H, W) and already L2-normalised per pixel. The global foreground prototype is a running
float64 sum + count over the U > 0 pixels of every training image (docs/methods/coin.md#reference-quirks, 2: the reference concatenates all
foreground features on the GPU), the background prototype is per image. `add_foreground` (pass 1) and
`image_heatmaps` (pass 2) apply them to the block-wise features of a feature source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cellseg.methods.coin.features import ImageFeatures

MINMAX_EPS = 1e-5  # docs/methods/coin.md#reference-quirks, 7: min-max denominators clipped at 1e-5
COSINE_EPS = 1e-8  # as torch.nn.functional.cosine_similarity


class PrototypeAccumulator:
    """Pixel-weighted mean of feature vectors over masked pixels, accumulated image by image (and zoom by zoom)."""

    def __init__(self, n_channels: int) -> None:
        self.sum = np.zeros(n_channels, dtype=np.float64)
        self.count = 0

    def add(self, feats: np.ndarray, mask: np.ndarray) -> None:
        """Add the feature vectors of `feats` (D, H, W) at the pixels where `mask` (H, W) is true (e.g. U > 0)."""
        _check_feats(feats, self.sum.shape[0])
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != feats.shape[1:]:
            raise ValueError(f"mask has shape {mask.shape}; expected the feature map's {feats.shape[1:]}")
        selected = feats.reshape(feats.shape[0], -1)[:, mask.ravel()]
        self.sum += selected.sum(axis=1, dtype=np.float64)
        self.count += int(selected.shape[1])

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no foreground pixel was accumulated (every UCIS map is empty): no prototype")
        return self.sum / self.count

    def state_dict(self) -> dict:
        return {"sum": self.sum.tolist(), "count": int(self.count)}

    @classmethod
    def from_state_dict(cls, state: dict) -> PrototypeAccumulator:
        acc = cls(len(state["sum"]))
        acc.sum = np.asarray(state["sum"], dtype=np.float64)
        acc.count = int(state["count"])
        return acc


def masked_prototype(feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean feature vector over the pixels where `mask` is true (per-image prototype, e.g. background U == 0)."""
    acc = PrototypeAccumulator(feats.shape[0])
    acc.add(feats, mask)
    return acc.mean


def background_prototype(feats: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """mu_bg(I): mean feature over the pixels with U == 0."""
    if not np.any(instances == 0):
        raise ValueError("the UCIS map has no background pixel: no background prototype")
    return masked_prototype(feats, instances == 0)


def cosine_heatmaps(feats_normalised: np.ndarray, mu_bg: np.ndarray, mu_fg: np.ndarray) -> np.ndarray:
    """float32 (2, H, W): cosine similarity of every pixel to the background (0) and foreground (1) prototype."""
    d = _check_feats(feats_normalised, len(mu_bg))
    protos = np.stack([mu_bg, mu_fg]).astype(np.float64)
    protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), COSINE_EPS)
    flat = feats_normalised.reshape(d, -1)
    norms = np.maximum(np.linalg.norm(flat, axis=0), COSINE_EPS)
    sims = (protos.astype(np.float32) @ flat) / norms
    return sims.reshape(2, *feats_normalised.shape[1:]).astype(np.float32)


def add_foreground(features: ImageFeatures, ucis: np.ndarray, accumulator: PrototypeAccumulator) -> None:
    """Pass 1: add this image's U > 0 features (every zoom) to the global foreground running sum."""
    for zoom in range(features.n_zooms):
        for rows, cols, feats in features.blocks(zoom):
            accumulator.add(feats, ucis[rows, cols] > 0)


def image_heatmaps(features: ImageFeatures, ucis: np.ndarray, mu_fg: np.ndarray | None) -> np.ndarray | None:
    """Pass 2: raw cosine heatmaps (2, H, W) to mu_bg(I) (U == 0 pixels) and mu_fg, averaged over zooms.

    `mu_fg=None` (refine.accumulate_centroids=false) uses this image's own U > 0 mean per zoom. None when the
    image has no background pixel (or, per image, no foreground pixel)."""
    heat = np.zeros((2, *ucis.shape), dtype=np.float32)
    for zoom in range(features.n_zooms):
        background = foreground = None
        for rows, cols, feats in features.blocks(zoom):
            background = background or PrototypeAccumulator(feats.shape[0])
            background.add(feats, ucis[rows, cols] == 0)
            if mu_fg is None:
                foreground = foreground or PrototypeAccumulator(feats.shape[0])
                foreground.add(feats, ucis[rows, cols] > 0)
        if background.count == 0 or (foreground is not None and foreground.count == 0):
            return None
        centre = mu_fg if mu_fg is not None else foreground.mean
        for rows, cols, feats in features.blocks(zoom):
            heat[:, rows, cols] += cosine_heatmaps(feats, background.mean, centre)
    return heat / features.n_zooms


def minmax_per_channel(maps: np.ndarray, eps: float = MINMAX_EPS) -> np.ndarray:
    """Min-max each channel of (C, H, W) over its pixels (denominator clipped at `eps`), then clip to [0, 1]."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(axis=1)[:, None, None]
    hi = flat.max(axis=1)[:, None, None]
    return np.clip((maps - lo) / np.maximum(hi - lo, eps), 0.0, 1.0)


def normalise_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """A3.3: per-channel min-max, then h_bg <- max(h_bg, 1 - h_fg) (channel 0 = bg, 1 = fg)."""
    if heatmaps.ndim != 3 or heatmaps.shape[0] != 2:
        raise ValueError(f"heatmaps have shape {heatmaps.shape}; expected (2, H, W) = (background, foreground)")
    out = minmax_per_channel(heatmaps)
    out[0] = np.maximum(out[0], 1.0 - out[1])
    return out


def _check_feats(feats: np.ndarray, n_channels: int) -> int:
    if feats.ndim != 3 or feats.shape[0] != n_channels:
        raise ValueError(f"features have shape {feats.shape}; expected ({n_channels}, H, W)")
    return n_channels
