"""Three-class (background / inside / boundary) targets and their decoding into instances.

Training on an explicit boundary class separates touching nuclei: the insides of neighbours never touch, so their
connected components are markers, and a watershed hands the boundary pixels back to the nearest inside.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.segmentation import find_boundaries, watershed

from cellseg.postproc.instances import (
    CONNECTIVITY_TO_SKIMAGE,
    add_unflooded_blobs,
    check_label_map,
    clean_instances,
    remove_small_instances,
)

BACKGROUND, INSIDE, BOUNDARY = 0, 1, 2
N_CLASSES = 3
ENERGIES = ("probability", "distance")


def three_class_targets(instance_label: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """uint8 map: 0 background, 1 inside, 2 boundary (inner boundary of every instance, `boundary_width` px)."""
    label = check_label_map(instance_label)
    if boundary_width < 1:
        raise ValueError(f"boundary_width={boundary_width}; expected >= 1")
    foreground = label > 0
    boundary = find_boundaries(label, mode="inner") & foreground
    if boundary_width > 1:
        # Thicken inwards only, so the boundary never leaks into background.
        boundary = ndi.binary_dilation(boundary, iterations=boundary_width - 1) & foreground
    targets = np.zeros(label.shape, dtype=np.uint8)
    targets[foreground] = INSIDE
    targets[boundary] = BOUNDARY
    return targets


def class_map_to_probs(class_map: np.ndarray) -> np.ndarray:
    """One-hot (3, H, W) float32 probabilities of a 0/1/2 class map."""
    class_map = np.asarray(class_map)
    if class_map.size and (class_map.min() < 0 or class_map.max() >= N_CLASSES):
        raise ValueError(f"class map holds values outside 0..{N_CLASSES - 1} (background, inside, boundary)")
    return (np.arange(N_CLASSES)[:, None, None] == class_map[None]).astype(np.float32)


def _as_probs(probs_or_classes: np.ndarray) -> np.ndarray:
    array = np.asarray(probs_or_classes)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
        return class_map_to_probs(array)
    if array.ndim == 3 and array.shape[0] == N_CLASSES:
        return array.astype(np.float32, copy=False)
    raise ValueError(
        f"three-class input has shape {array.shape} and dtype {array.dtype}; expected (3, H, W) probabilities "
        "(background, inside, boundary) or an integer H x W class map"
    )


def decode_three_class(
    probs_or_classes: np.ndarray,
    inside_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    marker_min_area: int = 4,
    marker_connectivity: int = 4,
    energy: str = "probability",
    keep_unmarked: bool = False,
    min_area: int = 0,
    fill_holes: bool = True,
) -> np.ndarray:
    """Instances (int32, 1..N) from three-class probabilities (3, H, W) or a class map (H, W).

    Markers: `marker_connectivity`-connected components of p_inside > `inside_threshold` (those below
    `marker_min_area` px removed). Watershed of 1 - p_inside (`energy="probability"`) or of minus the distance
    transform of the foreground (`"distance"`), restricted to p_inside + p_boundary > `foreground_threshold`.
    Foreground no marker reaches is dropped, or kept as one instance per blob with `keep_unmarked`.
    """
    if energy not in ENERGIES:
        raise ValueError(f"energy={energy!r}; expected one of {ENERGIES}")
    if marker_connectivity not in CONNECTIVITY_TO_SKIMAGE:
        raise ValueError(f"marker_connectivity={marker_connectivity!r}; expected 4 or 8")
    probs = _as_probs(probs_or_classes)
    foreground = probs[INSIDE] + probs[BOUNDARY] > foreground_threshold
    seeds = (probs[INSIDE] > inside_threshold) & foreground
    markers = cc_label(seeds, connectivity=CONNECTIVITY_TO_SKIMAGE[marker_connectivity])
    markers = remove_small_instances(markers, marker_min_area)
    if energy == "probability":
        landscape = 1.0 - probs[INSIDE]
    else:
        landscape = -ndi.distance_transform_edt(foreground)
    instances = watershed(landscape, markers, mask=foreground).astype(np.int32)
    if keep_unmarked:
        instances = add_unflooded_blobs(instances, foreground)
    return clean_instances(instances, min_area=min_area, fill_holes=fill_holes)
