"""Synthetic scribbles from instance maps, as Scribble2Label's `preprocess.py` (docs/data.md#scribbles), seeded and cached.

Foreground scribbles are whole skeletons of blobs; background scribbles are branch segments of the skeleton of the
background (a Voronoi-like network cut at its Harris corners). Both keep k = n_fg - floor(n_fg (1 - ratio)) items
at random (background: min(k, n_bg), the reference crashed when n_bg < k).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
from skimage.feature import corner_harris, corner_peaks
from skimage.measure import label as connected_components
from skimage.morphology import skeletonize

from cellseg.data.weak.cache import CachedWeakLabels
from cellseg.utils.ignore import IGNORE_CLASS
from cellseg.utils.io import write_mask_uint8

SCRIBBLE_BG = 0
SCRIBBLE_FG = 1
# Passed explicitly to skimage: its defaults changed since the reference was written (2020).
DEFAULT_CORNER_PARAMS = {
    "harris_k": 0.05,
    "harris_sigma": 1.0,
    "min_distance": 5,
    "threshold_rel": 0.1,
    "exclude_border": True,
}


def validate_ratio(ratio: float) -> float:
    """The scribble ratio as a float in (0, 1]; one clear error otherwise."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"supervision.ratio must be a number in (0, 1]; got {ratio!r}") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(f"supervision.ratio must be in (0, 1] (fraction of blobs scribbled); got {ratio!r}")
    return value


def validate_ignore_index(ignore_index: int) -> int:
    value = int(ignore_index)
    if not 2 <= value <= 255:
        raise ValueError(
            f"supervision.ignore_index must be in [2, 255] (uint8, distinct from the bg 0 and fg 1 classes); "
            f"got {ignore_index!r}"
        )
    return value


def n_kept_foreground(n_fg: int, ratio: float) -> int:
    """k = n_fg - floor(n_fg (1 - ratio)) as the reference, at least 1 when there is any blob."""
    if n_fg <= 0:
        return 0
    return max(1, n_fg - math.floor(n_fg * (1.0 - ratio)))


def foreground_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of the foreground skeleton (about one per blob) and their count."""
    return connected_components(skeletonize(mask), connectivity=2, return_num=True)


def background_segments(
    mask: np.ndarray,
    harris_k: float,
    harris_sigma: float,
    min_distance: int,
    threshold_rel: float,
    exclude_border: bool | int,
) -> tuple[np.ndarray, int]:
    """Branch segments of the background skeleton, cut by zeroing a 3 x 3 block at every Harris corner peak."""
    network = skeletonize(~mask)
    response = corner_harris(network.astype(np.float64), method="k", k=harris_k, sigma=harris_sigma)
    peaks = corner_peaks(
        response,
        min_distance=min_distance,
        threshold_rel=threshold_rel,
        exclude_border=exclude_border,
        indices=True,
    )
    for row, col in peaks:
        network[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = False  # bounds-safe
    return connected_components(network, connectivity=2, return_num=True)


def keep_random_components(components: np.ndarray, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of k of the n labelled components, drawn without replacement."""
    if k <= 0 or n <= 0:
        return np.zeros(components.shape, dtype=bool)
    chosen = rng.choice(np.arange(1, n + 1), size=min(k, n), replace=False)
    return np.isin(components, chosen)


def synthesize_scribble(
    label: np.ndarray,
    ratio: float,
    rng: np.random.Generator,
    *,
    ignore_index: int = IGNORE_CLASS,
    **corner_params,
) -> tuple[np.ndarray, dict[str, int]]:
    """Scribble map of one instance map (docs/data.md#scribbles) and the counts n_fg, n_bg, k_fg, k_bg.

    Output uint8: `ignore_index` unlabelled, 0 background scribble, 1 foreground scribble (written last).
    `corner_params` (defaults DEFAULT_CORNER_PARAMS): harris_k, harris_sigma, min_distance, threshold_rel,
    exclude_border.
    """
    ratio = validate_ratio(ratio)
    ignore_index = validate_ignore_index(ignore_index)
    unknown = set(corner_params) - set(DEFAULT_CORNER_PARAMS)
    if unknown:
        raise ValueError(
            f"unknown corner parameters {sorted(unknown)}; expected {sorted(DEFAULT_CORNER_PARAMS)}"
        )
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map has shape {label.shape}; expected a 2-D instance map")

    mask = label > 0
    fg_components, n_fg = foreground_components(mask)
    bg_components, n_bg = background_segments(mask, **{**DEFAULT_CORNER_PARAMS, **corner_params})
    k_fg = n_kept_foreground(n_fg, ratio)
    k_bg = min(k_fg, n_bg)
    fg_kept = keep_random_components(fg_components, n_fg, k_fg, rng)
    bg_kept = keep_random_components(bg_components, n_bg, k_bg, rng)

    scribble = np.full(label.shape, ignore_index, dtype=np.uint8)
    scribble[bg_kept] = SCRIBBLE_BG
    scribble[fg_kept] = SCRIBBLE_FG
    return scribble, {"n_fg": int(n_fg), "n_bg": int(n_bg), "k_fg": int(k_fg), "k_bg": int(k_bg)}


class ScribbleLabels(CachedWeakLabels):
    """Scribble supervision (S2L): one uint8 PNG per image and ratio, cached under `<cache_dir>/scribble/<key>/`."""

    kind: ClassVar[str] = "scribble"
    target_format: ClassVar[str] = "scribble"
    reads_ground_truth: ClassVar[bool] = True
    name: ClassVar[str] = "scribble"
    version: ClassVar[str] = "1"
    suffix: ClassVar[str] = ".png"

    def __init__(
        self,
        cache_dir: str | Path,
        ratio: float = 0.3,
        seed: int = 0,
        ignore_index: int = IGNORE_CLASS,
        harris_k: float = DEFAULT_CORNER_PARAMS["harris_k"],
        harris_sigma: float = DEFAULT_CORNER_PARAMS["harris_sigma"],
        min_distance: int = DEFAULT_CORNER_PARAMS["min_distance"],
        threshold_rel: float = DEFAULT_CORNER_PARAMS["threshold_rel"],
        exclude_border: bool = DEFAULT_CORNER_PARAMS["exclude_border"],
    ) -> None:
        super().__init__(cache_dir=cache_dir, seed=seed)
        self.ratio = validate_ratio(ratio)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.corner_params = {
            "harris_k": float(harris_k),
            "harris_sigma": float(harris_sigma),
            "min_distance": int(min_distance),
            "threshold_rel": float(threshold_rel),
            "exclude_border": exclude_border,
        }

    def params(self) -> dict:
        return {
            "ratio": self.ratio,
            "seed": self.seed,
            "ignore_index": self.ignore_index,
            **self.corner_params,
        }

    def sample_params(self) -> tuple:
        return (self.ratio,)  # ratios are sampled independently (docs/data.md#scribbles)

    def generate(self, image_id: str, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scribble, _ = synthesize_scribble(
            label, self.ratio, rng, ignore_index=self.ignore_index, **self.corner_params
        )
        return scribble

    def write(self, path: Path, array: np.ndarray) -> None:
        write_mask_uint8(path, array)

    def __repr__(self) -> str:
        return f"ScribbleLabels(ratio={self.ratio}, seed={self.seed}, cache_dir='{self.cache_dir}')"
