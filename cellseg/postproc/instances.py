"""Semantic (binary foreground) masks to instance label maps, shared by every method.

`watershed_instances` follows COIN's `semantic2instance` (docs/methods/coin.md#instances); `connected_components` is Scribble2Label's
decoding (docs/methods/s2l.md#inference-and-instances); `clean_instances` is the common tail (small objects, holes, contiguous ids).
"""

from __future__ import annotations

import inspect

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.morphology import disk
from skimage.segmentation import relabel_sequential, watershed

CONNECTIVITY_TO_SKIMAGE = {4: 1, 8: 2}


def _binary_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """A 2-D boolean foreground; probability maps must be thresholded by the caller."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} has shape {mask.shape}; expected a 2-D H x W foreground mask")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.floating) and not np.isin(mask, (0.0, 1.0)).all():
        raise ValueError(f"{name} holds values other than 0 and 1; threshold probabilities before decoding")
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise ValueError(f"{name} has dtype {mask.dtype}; expected bool, integer or 0/1 float")
    return mask > 0


def _check_connectivity(connectivity: int) -> int:
    if connectivity not in CONNECTIVITY_TO_SKIMAGE:
        raise ValueError(f"connectivity={connectivity!r}; expected 4 or 8")
    return CONNECTIVITY_TO_SKIMAGE[connectivity]


def denoise_mask(mask: np.ndarray) -> np.ndarray:
    """COIN's optional denoising: opening then closing with disk(2), then again with disk(1)."""
    out = _binary_mask(mask)
    for radius in (2, 1):
        out = ndi.binary_opening(out, structure=disk(radius))
        out = ndi.binary_closing(out, structure=disk(radius))
    return out


def watershed_instances(
    mask: np.ndarray,
    dist_sigma: float = 1.0,
    footprint_radius: int = 12,
    connectivity: int = 4,
    min_distance: int = 1,
    exclude_border: int | bool = 1,
    denoise: bool = False,
    keep_peakless: bool = False,
) -> np.ndarray:
    """Distance-transform watershed of a binary mask (COIN A4); returns an int32 label map.

    Markers are the `connectivity`-connected components of the `peak_local_max` pixels of the smoothed distance
    map (footprint disk(`footprint_radius`), restricted to the mask). Foreground left unflooded (blobs without a
    peak) is dropped, as in COIN, unless `keep_peakless`, in which case each such 8-connected blob becomes one
    instance (the `ucis: classical` rule).
    """
    structure_connectivity = _check_connectivity(connectivity)
    foreground = denoise_mask(mask) if denoise else _binary_mask(mask)
    if not foreground.any():
        return np.zeros(foreground.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(foreground)
    if dist_sigma > 0:
        distance = ndi.gaussian_filter(distance, sigma=dist_sigma)
    peaks = peak_local_max(
        distance,
        min_distance=min_distance,
        footprint=disk(footprint_radius),
        labels=foreground.astype(np.int32),
        exclude_border=exclude_border,
    )
    peak_mask = np.zeros(foreground.shape, dtype=bool)
    peak_mask[tuple(peaks.T)] = True
    markers = cc_label(peak_mask, connectivity=structure_connectivity)
    instances = watershed(-distance, markers, mask=foreground).astype(np.int32)
    if keep_peakless:
        instances = add_unflooded_blobs(instances, foreground)
    return instances


def add_unflooded_blobs(instances: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Give each 8-connected foreground blob the watershed left unlabelled a fresh id."""
    leftover = cc_label(foreground & (instances == 0), connectivity=2)
    out = instances.copy()
    out[leftover > 0] = leftover[leftover > 0] + instances.max()
    return out


def connected_components(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Connected components of a binary mask (S2L A4 uses 8-connectivity); int32 labels 1..N."""
    structure_connectivity = _check_connectivity(connectivity)
    return cc_label(_binary_mask(mask), connectivity=structure_connectivity).astype(np.int32)


def check_label_map(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(
            f"label map has shape {label.shape} and dtype {label.dtype}; expected a 2-D integer map"
        )
    if label.size and label.min() < 0:
        raise ValueError("label map has negative ids; expected 0 = background, 1..N = instances")
    return label


def remove_small_instances(label: np.ndarray, min_area: int) -> np.ndarray:
    """Zero every instance with fewer than `min_area` pixels (ids are kept)."""
    label = check_label_map(label)
    if min_area <= 0 or not label.any():
        return label.copy()
    areas = np.bincount(label.ravel())
    too_small = areas < min_area
    too_small[0] = False
    return np.where(too_small[label], 0, label).astype(label.dtype)


def fill_instance_holes(label: np.ndarray, max_hole: int | None = None) -> np.ndarray:
    """Fill holes of each instance inside its bounding box, without merging instances.

    A hole is filled only when it is pure background (a hole that holds another instance is left alone) and,
    when `max_hole` is given, holds at most `max_hole` pixels.
    """
    label = check_label_map(label)
    out = label.copy()
    for index, box in enumerate(ndi.find_objects(label)):
        if box is None:
            continue
        instance_id = index + 1
        crop = label[box]
        instance = crop == instance_id
        holes, n_holes = ndi.label(ndi.binary_fill_holes(instance) & ~instance)
        if n_holes == 0:
            continue
        hole_ids = np.arange(1, n_holes + 1)
        foreign = ndi.maximum(crop, labels=holes, index=hole_ids) > 0
        sizes = np.bincount(holes.ravel(), minlength=n_holes + 1)[1:]
        fillable = ~foreign if max_hole is None else ~foreign & (sizes <= max_hole)
        lookup = np.concatenate([[False], fillable])
        out[box][lookup[holes]] = instance_id
    return out


def clean_instances(
    label: np.ndarray,
    min_area: int = 0,
    fill_holes: bool = True,
    relabel: bool = True,
    max_hole: int | None = None,
) -> np.ndarray:
    """Remove instances below `min_area`, fill holes per instance, relabel contiguously 1..N (int32)."""
    out = remove_small_instances(label, min_area)
    if fill_holes:
        out = fill_instance_holes(out, max_hole=max_hole)
    if relabel:
        out = relabel_sequential(out)[0]
    return out.astype(np.int32)


INSTANCE_METHODS = {"watershed": watershed_instances, "cc": connected_components}


def semantic_to_instance(
    mask: np.ndarray, method: str = "watershed", min_area: int = 0, fill_holes: bool = True, **method_kwargs
) -> np.ndarray:
    """Binary mask -> cleaned, contiguous int32 instances; the one entry point the methods call.

    `method` is "watershed" (COIN A4; kwargs of `watershed_instances`) or "cc" (S2L A4; `connectivity`).
    """
    if method not in INSTANCE_METHODS:
        raise ValueError(
            f"instances method {method!r} is unknown; expected one of {sorted(INSTANCE_METHODS)}"
        )
    decode = INSTANCE_METHODS[method]
    allowed = set(inspect.signature(decode).parameters) - {"mask"}
    unknown = sorted(set(method_kwargs) - allowed)
    if unknown:
        raise ValueError(f"instances method {method!r} does not take {unknown}; it takes {sorted(allowed)}")
    return clean_instances(decode(mask, **method_kwargs), min_area=min_area, fill_holes=fill_holes)


def binary_to_instances(
    mask: np.ndarray,
    denoise: bool = False,
    dist_sigma: float = 1.0,
    footprint_radius: int = 12,
    connectivity: int = 4,
) -> np.ndarray:
    """A4 (shared `watershed_instances`, keywords of `method.module.instances`): int32 instances 1..N; blobs
    without a distance peak are dropped."""
    instances = watershed_instances(
        mask,
        dist_sigma=float(dist_sigma),
        footprint_radius=int(footprint_radius),
        connectivity=int(connectivity),
        denoise=bool(denoise),
    )
    return relabel_sequential(instances)[0].astype(np.int32)
