"""Instance outputs: label TIFF, QuPath GeoJSON and a per-nucleus CSV (docs/framework.md#output-formats).

Coordinates in the GeoJSON and the CSV are level-0 pixel coordinates in the continuous convention of QuPath,
shapely and rasterio: pixel (row r, column c) covers [c, c + 1) x [r, r + 1), so `floor(x)` is the column index.
Contours traced through pixel centres (skimage) are therefore shifted by half a pixel. A label map that is a
piece of a larger image (a chunk of a slide read at another resolution) is placed by `offset_xy` (its origin, in
its own pixels) and `scale` (level-0 pixels per label pixel): x_level0 = (x + offset_x) * scale. Sizes (area,
perimeter) are in pixels of the label map and, with `mpp` (its µm per pixel), in µm. Every writer is atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import reduce

import numpy as np
import pandas as pd
import shapely
import tifffile
from scipy import ndimage as ndi
from shapely.affinity import scale as shapely_scale
from shapely.affinity import translate
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.polygon import orient
from skimage.color import rgb2hed
from skimage.measure import find_contours, perimeter, regionprops_table
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from cellseg.postproc.instances import check_label_map
from cellseg.utils.io import atomic_path

MAX_UINT16_LABEL = 65535
PIXEL_CENTRE = 0.5  # array index i sits at continuous coordinate i + 0.5
UM_PER_CM = 1.0e4
OBJECT_TYPES = ("detection", "annotation")
ScoresLike = Mapping[int, float] | Sequence[float] | np.ndarray | None


def _instance_ids(label: np.ndarray) -> np.ndarray:
    ids = np.unique(label)
    return ids[ids > 0]


def _score_lookup(ids: np.ndarray, scores: ScoresLike) -> dict[int, float]:
    """Scores by instance id: a mapping id -> score, or a sequence aligned with the ascending ids."""
    if scores is None:
        return {}
    if isinstance(scores, Mapping):
        return {int(k): float(v) for k, v in scores.items()}
    values = np.asarray(scores, dtype=np.float64).ravel()
    if len(values) != len(ids):
        raise ValueError(
            f"{len(values)} scores for {len(ids)} instances; expected one per instance (ascending ids)"
        )
    return {int(i): float(v) for i, v in zip(ids, values, strict=True)}


# ----------------------------------------------------------------------------------------------- TIFF


def write_instance_tiff(path: str | os.PathLike, label: np.ndarray, mpp: float | None = None) -> None:
    """Instance map as a zlib TIFF: uint16 (uint32 beyond 65535 ids), ids made contiguous, resolution from mpp."""
    label = check_label_map(label)
    label = relabel_sequential(label)[0] if label.any() else label
    top = int(label.max()) if label.size else 0
    dtype = np.uint16 if top <= MAX_UINT16_LABEL else np.uint32
    resolution = {}
    check_mpp(mpp)
    if mpp is not None:
        resolution = {"resolution": (UM_PER_CM / mpp, UM_PER_CM / mpp), "resolutionunit": "CENTIMETER"}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, label.astype(dtype), photometric="minisblack", compression="zlib", **resolution)


# ----------------------------------------------------------------------------------------------- GeoJSON


def instance_geometry(instance: np.ndarray, simplify: float = 0.5) -> Polygon | MultiPolygon | None:
    """Valid (Multi)Polygon of a boolean mask in the mask's own pixel coordinates, holes as interior rings.

    Rings are marching-squares contours at level 0.5 (foreground 8-connected); nesting is resolved by the
    even-odd rule (symmetric difference of all rings). None when the mask is empty.
    """
    padded = np.pad(instance.astype(np.float32), 1)
    rings = [c for c in find_contours(padded, 0.5, fully_connected="high") if len(c) >= 4]
    if not rings:
        return None
    # (row, col) in the padded crop -> continuous (x, y) of the unpadded crop.
    polygons = [Polygon(ring[:, ::-1] - 1.0 + PIXEL_CENTRE) for ring in rings]
    geometry = reduce(lambda a, b: a.symmetric_difference(b), polygons)
    geometry = _polygonal(geometry)
    if geometry is None:
        return None
    if simplify > 0:
        simplified = _polygonal(geometry.simplify(simplify, preserve_topology=True))
        geometry = simplified if simplified is not None else geometry
    return geometry


def _polygonal(geometry) -> Polygon | MultiPolygon | None:
    """Valid polygonal part of a geometry (make_valid may return collections with lines), CCW exteriors."""
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon | MultiPolygon)]
    polygons = [p for part in parts for p in getattr(part, "geoms", [part]) if not p.is_empty and p.area > 0]
    if not polygons:
        return None
    polygons = [orient(p, sign=1.0) for p in polygons]
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _geojson_geometry(geometry: Polygon | MultiPolygon) -> dict:
    """GeoJSON dict with plain lists (rings closed by shapely: first position repeated last)."""
    as_dict = mapping(geometry)
    return {"type": as_dict["type"], "coordinates": json.loads(json.dumps(as_dict["coordinates"]))}


def instances_to_geojson(
    label: np.ndarray,
    scores: ScoresLike = None,
    simplify: float = 0.5,
    class_name: str = "Nucleus",
    color: tuple[int, int, int] = (255, 0, 0),
    object_type: str = "detection",
    offset_xy: tuple[float, float] = (0.0, 0.0),
    progress: bool = False,
    scale: float = 1.0,
    mpp: float | None = None,
) -> dict:
    """QuPath FeatureCollection: one Feature per instance (Polygon or MultiPolygon, holes as inner rings).

    Properties: objectType, classification {name, color}, measurements {instance_id, area (px), score and, with
    `mpp`, area_um2 and perimeter_um}. `offset_xy` and `scale` place the map in level-0 coordinates (module
    docstring).
    """
    label = check_label_map(label)
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type={object_type!r}; expected one of {OBJECT_TYPES}")
    check_mpp(mpp)
    score_of = _score_lookup(_instance_ids(label), scores)
    features = []
    boxes = ndi.find_objects(label)
    for index, box in enumerate(tqdm(boxes, desc="geojson", unit="nucleus", disable=not progress)):
        if box is None:
            continue
        instance_id = index + 1
        instance = label[box] == instance_id
        geometry = instance_geometry(instance, simplify=simplify)
        if geometry is None:
            continue
        dx, dy = box[1].start + offset_xy[0], box[0].start + offset_xy[1]
        geometry = translate(geometry, xoff=dx, yoff=dy)
        if scale != 1.0:
            geometry = shapely_scale(geometry, xfact=scale, yfact=scale, origin=(0.0, 0.0))
        area = int(instance.sum())
        measurements = {"instance_id": instance_id, "area": area}
        if mpp is not None:
            measurements.update(area_um2=area * mpp**2, perimeter_um=float(perimeter(instance)) * mpp)
        if instance_id in score_of:
            measurements["score"] = score_of[instance_id]
        features.append(
            {
                "type": "Feature",
                "geometry": _geojson_geometry(geometry),
                "properties": {
                    "objectType": object_type,
                    "classification": {"name": class_name, "color": [int(c) for c in color]},
                    "measurements": measurements,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    path: str | os.PathLike, label: np.ndarray, scores: ScoresLike = None, **geojson_kwargs
) -> None:
    """`instances_to_geojson` written compactly and atomically (QuPath: File > Import objects)."""
    collection = instances_to_geojson(label, scores=scores, **geojson_kwargs)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(collection, separators=(",", ":"), allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------- CSV

TABLE_COLUMNS = [
    "image_id", "instance_id", "centroid_x", "centroid_y", "area", "perimeter", "eccentricity", "solidity",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "score", "class", "mean_stain", "mean_eosin",
    "centroid_x_um", "centroid_y_um", "area_um2", "perimeter_um",
]  # fmt: skip


def check_mpp(mpp: float | None) -> None:
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp={mpp}; expected microns per pixel > 0 or None")


def stain_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(hematoxylin, eosin) optical densities (skimage rgb2hed) of an RGB image; a grey image is used as it is,
    with no eosin."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64), None
    if image.ndim == 3 and image.shape[2] == 3:
        hed = rgb2hed(image)
        return hed[..., 0], hed[..., 1]
    raise ValueError(f"image has shape {image.shape}; expected H x W x 3 RGB or H x W grey")


def instances_table(
    label: np.ndarray,
    image_id: str,
    image: np.ndarray | None = None,
    scores: ScoresLike = None,
    class_name: str = "Nucleus",
    mpp: float | None = None,
    offset_xy: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> pd.DataFrame:
    """One row per instance: centroid and bbox [x0, x1) x [y0, y1) in level-0 pixels (`offset_xy`, `scale`: module
    docstring), area and perimeter in label-map pixels, eccentricity, solidity, score, class, mean hematoxylin
    (or grey) and eosin optical density, and with `mpp` the centroid, area and perimeter in µm (else NaN)."""
    label = check_label_map(label)
    check_mpp(mpp)
    hematoxylin = eosin = None
    if image is not None:
        hematoxylin, eosin = stain_channels(image)
        if hematoxylin.shape != label.shape:
            raise ValueError(
                f"image of shape {np.shape(image)} does not match label map of shape {label.shape}"
            )
    properties = ["label", "centroid", "area", "bbox", "perimeter", "eccentricity", "solidity"]
    props = regionprops_table(label, properties=properties)
    ids = props["label"].astype(np.int64)
    score_of = _score_lookup(ids, scores)
    x = props["centroid-1"] + PIXEL_CENTRE + offset_xy[0]
    y = props["centroid-0"] + PIXEL_CENTRE + offset_xy[1]
    um = mpp if mpp is not None else np.nan
    table = pd.DataFrame(
        {
            "image_id": [image_id] * len(ids),
            "instance_id": ids,
            "centroid_x": x * scale,
            "centroid_y": y * scale,
            "area": props["area"].astype(np.int64),
            "perimeter": props["perimeter"],
            "eccentricity": props["eccentricity"],
            "solidity": props["solidity"],
            "bbox_x0": np.floor((props["bbox-1"] + offset_xy[0]) * scale).astype(np.int64),
            "bbox_y0": np.floor((props["bbox-0"] + offset_xy[1]) * scale).astype(np.int64),
            "bbox_x1": np.ceil((props["bbox-3"] + offset_xy[0]) * scale).astype(np.int64),
            "bbox_y1": np.ceil((props["bbox-2"] + offset_xy[1]) * scale).astype(np.int64),
            "score": [score_of.get(int(i), np.nan) for i in ids],
            "class": [class_name] * len(ids),
            "mean_stain": _region_means(label, ids, hematoxylin),
            "mean_eosin": _region_means(label, ids, eosin),
            "centroid_x_um": x * um,
            "centroid_y_um": y * um,
            "area_um2": props["area"] * um**2,
            "perimeter_um": props["perimeter"] * um,
        },
        columns=TABLE_COLUMNS,
    )
    return table


def _region_means(label: np.ndarray, ids: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    if values is None or not len(ids):
        return np.full(len(ids), np.nan)
    return np.asarray(ndi.mean(values, labels=label, index=ids), dtype=np.float64)


def write_instances_csv(
    path: str | os.PathLike,
    label: np.ndarray,
    image_id: str,
    image: np.ndarray | None = None,
    scores: ScoresLike = None,
    class_name: str = "Nucleus",
    mpp: float | None = None,
) -> pd.DataFrame:
    """Write `instances_table` as CSV atomically; returns the table."""
    table = instances_table(label, image_id, image=image, scores=scores, class_name=class_name, mpp=mpp)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return table
