"""Stage 2b of COIN, offline prompter (docs/methods/coin.md#prompters).

One positive point per UCIS/watershed instance (interior point by default, the reference's centroid as an
option); a classical segmenter grows a mask from that point inside a square window, independently of the
watershed. Masks are kept as crops with an offset (700 full-size masks per image would not fit).

The `method.prompter` nodes (configs/method/prompter/): `ClassicalPrompter` and `SamPrompter` (segment-anything
from a local checkpoint); `prompter(image_rgb, instances)` gives one `PromptedMask` per instance. `save_prompts`
and `load_prompts` store an image's prompted masks (`pseudo_<t>/prompts/<id>.npz`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import filters
from skimage.segmentation import morphological_chan_vese, random_walker
from tqdm import tqdm

from cellseg.methods.coin.ucis import check_stain, stain_channel
from cellseg.utils.io import atomic_path

METHODS = ("local_otsu", "random_walker", "morph_chan_vese")
PROMPT_POINTS = ("interior", "centroid")
RW_MODES = ("bf", "cg", "cg_j", "cg_mg")  # skimage.segmentation.random_walker


@dataclass(frozen=True)
class PromptedMask:
    """A prompted mask as a bool crop whose top-left pixel sits at `offset` (row, col) of the image."""

    instance_id: int
    mask: np.ndarray
    offset: tuple[int, int]

    def to_full(self, shape: tuple[int, int]) -> np.ndarray:
        full = np.zeros(shape, dtype=bool)
        r0, c0 = self.offset
        full[r0:r0 + self.mask.shape[0], c0:c0 + self.mask.shape[1]] = self.mask
        return full


def interior_point(instance_mask: np.ndarray) -> tuple[int, int]:
    """(row, col) of the distance-transform maximum (outside the image counts as background);
    ties go to the first pixel in row-major order."""
    mask = np.asarray(instance_mask, dtype=bool)
    if not mask.any():
        raise ValueError("interior_point of an empty instance mask")
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), mask.shape))


def centroid_point(instance_mask: np.ndarray) -> tuple[int, int]:
    """(row, col) = integer part of the mean row and mean column (the reference prompt; may lie outside)."""
    rows, cols = np.nonzero(instance_mask)
    if rows.size == 0:
        raise ValueError("centroid_point of an empty instance mask")
    return int(rows.mean()), int(cols.mean())


def prompt_point(instance_mask: np.ndarray, where: str) -> tuple[int, int]:
    """(row, col) of the prompt of one instance: `interior` or `centroid` (`method.prompter.prompt_point`)."""
    return interior_point(instance_mask) if where == "interior" else centroid_point(instance_mask)


def check_prompt_point(where: str) -> None:
    if where not in PROMPT_POINTS:
        raise ValueError(f"method.prompter.prompt_point={where!r}; expected one of {PROMPT_POINTS}")


def median_radius(instances: np.ndarray) -> float:
    """Equivalent radius sqrt(area / pi) of the median instance area (0 without instances)."""
    areas = np.bincount(instances.ravel())[1:]
    areas = areas[areas > 0]
    return math.sqrt(float(np.median(areas)) / math.pi) if areas.size else 0.0


class ClassicalPrompter:
    """Point-prompted segmentation of the stain channel (in [0, 1]) in a square window around the point.

    Window half-size: `auto` = max(16, 3 r_med), else the given int. Methods:
    - `local_otsu` (default here): Otsu threshold of the window. About 1 ms per instance on MoNuSeg, and its
      IoU score tracks the UCIS instance's true quality (see the report of benchmarks/ucis_monuseg.py).
    - `random_walker` (the first planned recipe): skimage random_walker (beta 130); seeds fg = disk of radius `fg_radius`
      (2) at the point, bg = the window sides inside the image + pixels below the window's `bg_percentile`-th
      (20) stain percentile. About 6 ms per instance; with these values its masks stay small on H&E.
    - `morph_chan_vese`: 50 iterations, smoothing 1, initial level set = disk of radius r_med / 2 (~15 ms).
    Every method keeps the 4-connected component containing the point (empty if the point falls outside);
    `smooth_sigma` > 0 smooths the window first, `fill_holes` fills the kept component.

    As the `method/prompter=classical` node, `prompter(image_rgb, instances)` prompts every instance at its
    `prompt_point` on the stain channel of `stain` (`method.stain`).
    """

    def __init__(
        self,
        method: str = "local_otsu",
        window: str | int = "auto",
        beta: float = 130,
        bg_percentile: float = 20,
        fg_radius: int = 2,
        rw_mode: str = "bf",
        rw_tol: float = 1e-3,
        chan_vese_iters: int = 50,
        smooth_sigma: float = 0.0,
        fill_holes: bool = False,
        prompt_point: str = "interior",
        stain: str = "auto",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method.prompter.method={method!r}; expected one of {METHODS}")
        if window != "auto" and (not _is_int(window) or window < 1):
            raise ValueError(f"method.prompter.window must be 'auto' or a positive int, got {window!r}")
        if rw_mode not in RW_MODES:
            raise ValueError(f"method.prompter.rw_mode={rw_mode!r}; expected one of {RW_MODES}")
        for key, value, low in (("fg_radius", fg_radius, 0), ("chan_vese_iters", chan_vese_iters, 1)):
            if not _is_int(value) or value < low:
                raise ValueError(f"method.prompter.{key}={value!r}; expected an integer >= {low}")
        if not 0 <= bg_percentile <= 100:
            raise ValueError(f"method.prompter.bg_percentile={bg_percentile!r}; expected a percentile in [0, 100]")
        for key, value in (("beta", beta), ("rw_tol", rw_tol)):
            if not value > 0:
                raise ValueError(f"method.prompter.{key}={value!r}; expected a positive number")
        if not smooth_sigma >= 0:
            raise ValueError(f"method.prompter.smooth_sigma={smooth_sigma!r}; expected a number >= 0")
        check_prompt_point(prompt_point)
        check_stain(stain)
        self.method = method
        self.window = window
        self.beta = beta
        self.bg_percentile = bg_percentile
        self.fg_radius = fg_radius
        self.rw_mode = rw_mode
        self.rw_tol = rw_tol
        self.chan_vese_iters = chan_vese_iters
        self.smooth_sigma = smooth_sigma
        self.fill_holes = fill_holes
        self.prompt_point = prompt_point
        self.stain = stain

    def __call__(self, image_rgb: np.ndarray, instances: np.ndarray) -> list[PromptedMask]:
        """One prompted mask per instance of `instances` (ascending id)."""
        return prompt_masks(image_rgb, instances, self.prompt_point, self, self.stain)

    def half_size(self, r_med: float) -> int:
        return max(16, int(round(3 * r_med))) if self.window == "auto" else int(self.window)

    def segment(self, stain01: np.ndarray, point: tuple[int, int], r_med: float) -> np.ndarray:
        """Full-size bool mask of the object grown from `point` (row, col)."""
        crop, offset = self.segment_window(stain01, point, r_med)
        return PromptedMask(0, crop, offset).to_full(stain01.shape)

    def segment_window(
        self, stain01: np.ndarray, point: tuple[int, int], r_med: float
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """(bool mask of the window, window's top-left (row, col)); the point lies inside the window."""
        height, width = stain01.shape
        row, col = point
        if not (0 <= row < height and 0 <= col < width):
            raise ValueError(f"prompt point {point} lies outside the image of shape {stain01.shape}")
        half = self.half_size(r_med)
        r0, r1 = max(row - half, 0), min(row + half + 1, height)
        c0, c1 = max(col - half, 0), min(col + half + 1, width)
        window = stain01[r0:r1, c0:c1].astype(np.float64)
        if self.smooth_sigma > 0:
            window = ndi.gaussian_filter(window, self.smooth_sigma)
        local = (row - r0, col - c0)
        inside_sides = (r0 > 0, r1 < height, c0 > 0, c1 < width)
        if self.method == "random_walker":
            fg = self._random_walker(window, local, inside_sides)
        elif self.method == "morph_chan_vese":
            fg = self._chan_vese(window, local, r_med)
        else:
            fg = self._local_otsu(window)
        component = _component_at(fg, local)
        if self.fill_holes:
            component = ndi.binary_fill_holes(component)
        return component, (r0, c0)

    def _seeds(self, window: np.ndarray, local: tuple[int, int], inside_sides: tuple[bool, ...]) -> np.ndarray:
        seeds = np.zeros(window.shape, dtype=np.int32)
        seeds[window < np.percentile(window, self.bg_percentile)] = 2
        top, bottom, left, right = inside_sides
        if top:
            seeds[0, :] = 2
        if bottom:
            seeds[-1, :] = 2
        if left:
            seeds[:, 0] = 2
        if right:
            seeds[:, -1] = 2
        seeds[_disk_mask(window.shape, local, self.fg_radius)] = 1
        return seeds

    def _random_walker(self, window, local, inside_sides) -> np.ndarray:
        seeds = self._seeds(window, local, inside_sides)
        if not np.any(seeds == 2):  # flat window: nothing darker than the point's surroundings
            return seeds == 1
        result = random_walker(window, seeds, beta=self.beta, mode=self.rw_mode, tol=self.rw_tol)
        return result == 1

    def _chan_vese(self, window, local, r_med) -> np.ndarray:
        init = _disk_mask(window.shape, local, max(1, int(round(r_med / 2))))
        level = morphological_chan_vese(window, self.chan_vese_iters, init_level_set=init.astype(np.int8),
                                        smoothing=1)
        return level.astype(bool)

    def _local_otsu(self, window) -> np.ndarray:
        if window.max() <= window.min():
            return np.zeros(window.shape, dtype=bool)
        return window > filters.threshold_otsu(window)


def prompt_masks(
    image_rgb: np.ndarray,
    instances: np.ndarray,
    prompt_point: str = "interior",
    prompter: ClassicalPrompter | None = None,
    stain: str = "auto",
    progress: bool = False,
) -> list[PromptedMask]:
    """One prompted mask per instance of `instances` (ascending id), prompted at its interior point or centroid."""
    if prompt_point not in PROMPT_POINTS:
        raise ValueError(f"unknown prompt_point {prompt_point!r}; expected one of {PROMPT_POINTS}")
    if instances.shape != image_rgb.shape[:2]:
        raise ValueError(f"instance map has shape {instances.shape}; expected the image's {image_rgb.shape[:2]}")
    prompter = prompter or ClassicalPrompter()
    stain01 = stain_channel(image_rgb, stain)
    r_med = median_radius(instances)
    pick = interior_point if prompt_point == "interior" else centroid_point
    results = []
    boxes = ndi.find_objects(instances)
    for index, box in enumerate(tqdm(boxes, desc="prompts", disable=not progress, leave=False)):
        if box is None:
            continue
        instance_id = index + 1
        local_row, local_col = pick(instances[box] == instance_id)
        point = (box[0].start + local_row, box[1].start + local_col)
        mask, offset = prompter.segment_window(stain01, point, r_med)
        results.append(PromptedMask(instance_id, mask, offset))
    return results


class SamPrompter:
    """`method/prompter=sam`: segment-anything (`model_type` vit_b | vit_l | vit_h) from a local checkpoint
    (`weights`, optional `weights_sha256`; `auto` downloads when online), one point per instance at its
    `prompt_point`, N x 1 point batches of `prompt_batch`, the multimask output with the best predicted IoU.
    The predictor is built on first use, on `device` (`auto` = CUDA when available). segment-anything (and torch)
    are imported only by this class, so the classical stages stay light."""

    def __init__(
        self,
        model_type: str = "vit_b",
        weights: str | os.PathLike | None = None,
        weights_sha256: str | None = None,
        prompt_batch: int = 64,
        device: str = "auto",
        prompt_point: str = "interior",
    ) -> None:
        import segment_anything

        from cellseg.models import sam as sam_models

        if not weights:
            raise ValueError(sam_models.MISSING_WEIGHTS)
        registry = segment_anything.sam_model_registry
        if model_type not in registry:
            raise ValueError(f"method.prompter.model_type={model_type!r}; expected one of {sorted(registry)}")
        if not _is_int(prompt_batch) or prompt_batch < 1:
            raise ValueError(f"method.prompter.prompt_batch={prompt_batch!r}; expected an integer >= 1")
        check_prompt_point(prompt_point)
        self.model_type, self.weights, self.weights_sha256 = model_type, weights, weights_sha256
        self.batch, self.device, self.prompt_point = int(prompt_batch), device, prompt_point
        self._predictor = None

    @property
    def predictor(self):
        if self._predictor is None:
            import torch

            from cellseg.models import sam as sam_models

            device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
            self._predictor = sam_models.build_sam_predictor(self.model_type, self.weights, device=device,
                                                             weights_sha256=self.weights_sha256)
        return self._predictor

    def __call__(self, image_rgb: np.ndarray, instances: np.ndarray) -> list[PromptedMask]:
        """One prompted mask per instance of `instances` (ascending id)."""
        from cellseg.models import sam as sam_models

        predictor = self.predictor
        ids, points = [], []
        for index, box in enumerate(ndi.find_objects(instances)):
            if box is None:
                continue
            row, col = prompt_point(instances[box] == index + 1, self.prompt_point)
            ids.append(index + 1)
            points.append((box[1].start + col, box[0].start + row))  # SAM takes (x, y)
        results: list[PromptedMask] = []
        for where, masks, _ in sam_models.iter_masks_for_points(predictor, image_rgb, np.asarray(points), self.batch):
            for instance_id, point, mask in zip(ids[where], points[where], masks, strict=True):
                results.append(crop_mask(instance_id, mask, (point[1], point[0])))
        return results


def crop_mask(instance_id: int, mask: np.ndarray, point: tuple[int, int]) -> PromptedMask:
    """A full-size bool mask as a PromptedMask crop (its bounding box; an empty 1 x 1 crop at the point)."""
    box = ndi.find_objects(mask.astype(np.uint8))
    if not box or box[0] is None:
        return PromptedMask(instance_id, np.zeros((1, 1), dtype=bool), (int(point[0]), int(point[1])))
    rows, cols = box[0]
    return PromptedMask(instance_id, np.ascontiguousarray(mask[rows, cols]), (rows.start, cols.start))


def save_prompts(path: str | Path, prompts: list[PromptedMask]) -> None:
    """Prompted mask crops in one compressed npz (ids, offsets, shapes, packed bits), written atomically."""
    shapes = np.array([p.mask.shape for p in prompts], dtype=np.int64).reshape(-1, 2)
    bits = np.concatenate([p.mask.ravel() for p in prompts]) if prompts else np.zeros(0, dtype=bool)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, ids=np.array([p.instance_id for p in prompts], dtype=np.int64),
                            offsets=np.array([p.offset for p in prompts], dtype=np.int64).reshape(-1, 2),
                            shapes=shapes, bits=np.packbits(bits), n_bits=np.int64(bits.size))


def load_prompts(path: str | Path) -> list[PromptedMask]:
    with np.load(path) as data:
        bits = np.unpackbits(data["bits"])[: int(data["n_bits"])].astype(bool)
        prompts, start = [], 0
        for instance_id, offset, shape in zip(data["ids"], data["offsets"], data["shapes"], strict=True):
            size = int(shape[0] * shape[1])
            mask = bits[start:start + size].reshape(int(shape[0]), int(shape[1]))
            prompts.append(PromptedMask(int(instance_id), mask, (int(offset[0]), int(offset[1]))))
            start += size
    return prompts


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _component_at(mask: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of `mask` containing `point` (empty if the point is not in the mask)."""
    if not mask[point]:
        return np.zeros(mask.shape, dtype=bool)
    labels, _ = ndi.label(mask)
    return labels == labels[point]


def _disk_mask(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    """Pixels within `radius` of `centre` (the footprint of skimage's disk(radius)), clipped to `shape`."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
