"""Relevance map -> sparse, confident pseudo instances (docs/methods/cyclic.md#pseudo-instances).

1. B = R >= tau * max R; 8-connected components, optionally split by a watershed on distance-transform peaks.
2. Candidates: min_area <= area <= max_area, solidity >= min_solidity, not touching the image border.
3. Rank by |area - A_ref| ascending, ties by higher mean relevance (`rank_descending` reproduces the reference,
   which sorted the largest deviation first); keep the top K.
4. Each kept component's filled convex hull is one instance; an earlier-ranked hull wins overlapping pixels.
5. Ignore: the pixels of every above-threshold component not kept (filtered out or beyond K), dilated.

Maps are uint16: 0 background, 1..K instances in rank order, `IGNORE_INSTANCE` ignore.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import label as connected_components
from skimage.measure import regionprops
from skimage.morphology import convex_hull_image, disk
from skimage.segmentation import watershed

from cellseg.data.weak.pseudo_instances import compact_pseudo_ids
from cellseg.utils.ignore import IGNORE_INSTANCE

SPLITS = ("none", "watershed")
AREA_REF_MODES = ("dataset_median", "image_median")
# Watershed peak spacing when none is given: about r_ref / 2 for the reference A_ref = 600 px at 40x (r_ref ~ 14).
DEFAULT_MIN_DISTANCE = 7


@dataclass(frozen=True)
class Candidate:
    """One filtered component: its id in the component map, pixel area, mean relevance, solidity and bbox
    (min_row, min_col, max_row, max_col), max exclusive, as skimage's regionprops."""

    label: int
    area: int
    mean_relevance: float
    solidity: float
    bbox: tuple[int, int, int, int]


def instances_per_image(height: int, width: int, per_mpx: float) -> int:
    """K = max(1, round(per_mpx * H * W / 1e6)): a per-megapixel budget, at least one instance per image.
    Halves round up (2.5 -> 3), not to even as Python's round."""
    if per_mpx is None or not float(per_mpx) > 0:
        raise ValueError(f"the per-megapixel instance count (method.pseudo.k_per_mpx) must be > 0; got {per_mpx!r}")
    return max(1, math.floor(float(per_mpx) * int(height) * int(width) / 1e6 + 0.5))


def _checked_relevance(relevance: np.ndarray) -> np.ndarray:
    relevance = np.asarray(relevance, dtype=np.float64)
    if relevance.ndim != 2:
        raise ValueError(f"relevance map has shape {relevance.shape}; expected H x W")
    if not np.isfinite(relevance).all():
        raise ValueError("relevance map has NaN or infinite values")
    return relevance


def relevance_candidates(
    relevance: np.ndarray, tau: float, split: str = "none", min_distance: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(components, above): the int32 component map of B = R >= tau * max R (0 outside B) and B itself.

    Components are 8-connected; `split="watershed"` cuts each one at the peaks of its distance transform spaced
    >= `min_distance` px (None: DEFAULT_MIN_DISTANCE), and a component without a peak stays whole. A map whose
    maximum is <= 0 holds no relevant pixel.
    """
    relevance = _checked_relevance(relevance)
    if not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"method.pseudo.tau must be in (0, 1] (fraction of the image's maximum relevance); got {tau!r}")
    if split not in SPLITS:
        raise ValueError(f"method.pseudo.split must be one of {list(SPLITS)}; got {split!r}")
    top = float(relevance.max()) if relevance.size else 0.0
    if top <= 0.0:
        return np.zeros(relevance.shape, dtype=np.int32), np.zeros(relevance.shape, dtype=bool)
    above = relevance >= tau * top
    components = connected_components(above, connectivity=2).astype(np.int32)
    if split == "watershed":
        components = _watershed_split(above, components, DEFAULT_MIN_DISTANCE if min_distance is None else min_distance)
    return components, above


def _watershed_split(above: np.ndarray, components: np.ndarray, min_distance: int) -> np.ndarray:
    if int(min_distance) < 1:
        raise ValueError(f"method.pseudo.min_distance must be an int >= 1 (watershed peak spacing); got {min_distance!r}")
    distance = ndimage.distance_transform_edt(above)
    peaks = peak_local_max(distance, min_distance=int(min_distance), labels=components, exclude_border=False)
    markers = np.zeros(above.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = watershed(-distance, markers, mask=above, connectivity=2).astype(np.int32)
    # Components no marker reached (no peak) keep their own id after the split ones.
    rest = above & (split == 0)
    if rest.any():
        leftovers = connected_components(rest, connectivity=2).astype(np.int32)
        split[rest] = leftovers[rest] + len(peaks)
    return split


def filter_candidates(
    components: np.ndarray,
    relevance: np.ndarray,
    min_area: int = 100,
    max_area: int = 1000,
    min_solidity: float = 0.85,
    exclude_border: bool = True,
) -> list[Candidate]:
    """The components with min_area <= area <= max_area, solidity >= min_solidity and (with `exclude_border`) no
    pixel on the image border, in component-id order."""
    if not 0 <= min_area <= max_area:
        raise ValueError(f"method.pseudo.min_area and method.pseudo.max_area must satisfy 0 <= min_area <= max_area; "
                         f"got {min_area!r} and {max_area!r}")
    if not 0.0 <= float(min_solidity) <= 1.0:
        raise ValueError(f"method.pseudo.min_solidity must be in [0, 1]; got {min_solidity!r}")
    relevance = _checked_relevance(relevance)
    if components.shape != relevance.shape:
        raise ValueError(f"components {components.shape} and relevance {relevance.shape} differ in shape")
    height, width = components.shape
    kept = []
    for region in regionprops(components, intensity_image=relevance):
        area = int(region.area)
        if not min_area <= area <= max_area:
            continue
        r0, c0, r1, c1 = (int(v) for v in region.bbox)
        if exclude_border and (r0 == 0 or c0 == 0 or r1 == height or c1 == width):
            continue
        solidity = float(region.solidity)  # after the cheap tests: it computes a convex hull
        if solidity < min_solidity:
            continue
        kept.append(Candidate(int(region.label), area, float(region.intensity_mean), solidity, (r0, c0, r1, c1)))
    return kept


def reference_area(areas: Sequence[float], mode: str | float) -> float:
    """A_ref: the median of `areas` for "dataset_median" (the caller passes every training image's candidate
    areas) and "image_median" (one image's), or the given number of px. ValueError on an empty median."""
    if isinstance(mode, str):
        if mode not in AREA_REF_MODES:
            raise ValueError(f"method.pseudo.area_ref must be one of {list(AREA_REF_MODES)} or an area in px; got {mode!r}")
        if len(areas) == 0:
            raise ValueError(f"method.pseudo.area_ref={mode} needs at least one candidate area; got none "
                             "(lower method.pseudo.tau or widen method.pseudo.min_area / method.pseudo.max_area)")
        return float(np.median(np.asarray(areas, dtype=np.float64)))
    value = float(mode)
    if not value > 0:
        raise ValueError(f"method.pseudo.area_ref as a number must be an area > 0 px; got {mode!r}")
    return value


def rank_candidates(candidates: Sequence[Candidate], area_ref: float, descending: bool = False) -> list[Candidate]:
    """Candidates by |area - area_ref| ascending (closest first), ties by higher mean relevance, then component id.
    `descending=True` puts the largest deviation first, as the reference code did (faithful_rank_descending)."""
    sign = -1.0 if descending else 1.0
    return sorted(
        candidates, key=lambda c: (sign * abs(c.area - area_ref), -c.mean_relevance, c.label)
    )


def hull_mask(components: np.ndarray, candidate: Candidate) -> tuple[tuple[slice, slice], np.ndarray]:
    """(bbox slices, filled convex hull of the candidate's pixels inside its bbox)."""
    r0, c0, r1, c1 = candidate.bbox
    window = (slice(r0, r1), slice(c0, c1))
    return window, convex_hull_image(components[window] == candidate.label)


def candidate_areas(
    relevance: np.ndarray,
    *,
    tau: float = 0.3,
    split: str = "none",
    min_distance: int | None = None,
    min_area: int = 100,
    max_area: int = 1000,
    min_solidity: float = 0.85,
    exclude_border: bool = True,
) -> list[int]:
    """Areas of one image's filtered candidates: the first pass of `area_ref: dataset_median`."""
    components, _ = relevance_candidates(relevance, tau, split, min_distance)
    return [c.area for c in filter_candidates(components, relevance, min_area, max_area, min_solidity, exclude_border)]


def extract_pseudo_instances(
    relevance: np.ndarray,
    *,
    area_ref: float | str,
    k: int,
    tau: float = 0.3,
    split: str = "none",
    min_distance: int | None = None,
    min_area: int = 100,
    max_area: int = 1000,
    min_solidity: float = 0.85,
    exclude_border: bool = True,
    ignore_unselected: bool = True,
    ignore_dilate: int = 2,
    rank_descending: bool = False,
) -> tuple[np.ndarray, dict]:
    """(uint16 pseudo label, info) of one relevance map (module docstring, steps 1-5).

    `area_ref`: A_ref in px (the dataset median from `candidate_areas` + `reference_area`), or "image_median".
    `k`: at most this many instances (`instances_per_image`). Instance ids 1..n follow the rank. With
    `ignore_unselected`, the pixels of above-threshold components not kept, dilated by a disk of radius
    `ignore_dilate`, are IGNORE_INSTANCE except where an instance is; without it they are background (reference).
    info: candidate_areas (every filtered candidate, for a dataset median), area_ref, n_components, n_candidates,
    n_kept, kept (ranked Candidates kept), ignore_px.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k (instances per image, method.pseudo.k_per_mpx) must be an int >= 0; got {k!r}")
    if isinstance(ignore_dilate, bool) or not isinstance(ignore_dilate, int | np.integer) or ignore_dilate < 0:
        raise ValueError(f"method.pseudo.ignore_dilate must be an int >= 0 (px); got {ignore_dilate!r}")
    components, above = relevance_candidates(relevance, tau, split, min_distance)
    candidates = filter_candidates(components, relevance, min_area, max_area, min_solidity, exclude_border)
    areas = [c.area for c in candidates]
    if area_ref == "dataset_median":
        raise ValueError("method.pseudo.area_ref=dataset_median must be resolved to a number first "
                         "(reference_area over candidate_areas of every training image)")
    if area_ref == "image_median" and not candidates:
        ref = math.nan  # nothing to rank
    else:
        ref = reference_area(areas, area_ref)
    kept = rank_candidates(candidates, ref, descending=rank_descending)[:k]

    out = np.zeros(components.shape, dtype=np.int64)
    for instance_id, candidate in enumerate(kept, start=1):
        window, hull = hull_mask(components, candidate)
        free = hull & (out[window] == 0)  # an earlier-ranked hull keeps its pixels
        out[window][free] = instance_id
    if ignore_unselected:
        unselected = above & ~np.isin(components, [c.label for c in kept])
        if ignore_dilate > 0 and unselected.any():
            unselected = ndimage.binary_dilation(unselected, structure=disk(int(ignore_dilate)))
        out[unselected & (out == 0)] = IGNORE_INSTANCE
    label = compact_pseudo_ids(out)  # a hull covered by earlier ones leaves no gap in the ids
    info = {
        "candidate_areas": areas,
        "area_ref": ref,
        "n_components": int(components.max()),
        "n_candidates": len(candidates),
        "n_kept": int(label[label != IGNORE_INSTANCE].max(initial=0)),
        "kept": kept,
        "ignore_px": int((label == IGNORE_INSTANCE).sum()),
    }
    return label, info
