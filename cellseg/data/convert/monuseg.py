"""MoNuSeg 2018: H&E `.tif` images + Aperio XML polygons (`.xml` or `.xml.gz`) -> instance label maps.

Polygons are rasterised with skimage `draw.polygon` at (Y - 1, X - 1): the vertices are 1-based (MATLAB), and the
official MoNuSeg code uses `poly2mask`; without the shift the masks are one pixel off (foreground Dice ~0.92).
Regions are drawn in XML order (ids 1..N), a later region wins where polygons overlap; regions with fewer than three
vertices are skipped.
"""

from __future__ import annotations

import gzip
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from cellseg.data.convert.common import (
    DatasetWriter,
    SourceInfo,
    files_by_stem,
    find_split_dirs,
    pair_files,
    progress,
)
from cellseg.utils.io import read_image

log = logging.getLogger(__name__)

DATASET = "MoNuSeg"
SPLIT_DIRS = {
    "train": ("MoNuSeg 2018 Training Data", "MoNuSegTrainingData", "MoNuSeg Training Data", "train", "training"),
    "test": ("MoNuSegTestData", "MoNuSeg 2018 Test Data", "MoNuSeg Test Data", "test", "testing"),
}
EXPECTED = {"train": (37, 30), "test": (14,)}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
XML_SUFFIXES = (".xml.gz", ".xml")
INFO = SourceInfo(
    title="MoNuSeg 2018 (Multi-Organ Nuclei Segmentation), H&E, 40x, 1000 x 1000, TCGA",
    citation="Kumar et al., IEEE TMI 36(7), 2017; Kumar et al., IEEE TMI 39(5), 2020 (MoNuSeg challenge)",
    origin="monuseg.grand-challenge.org (MoNuSeg 2018 Training Data, MoNuSegTestData)",
    licence="CC BY-NC-SA 4.0",
    conversion="Aperio XML regions rasterised with skimage.draw.polygon at rows Y - 1, cols X - 1 (MATLAB poly2mask "
    "convention); ids 1..N in XML region order, later region wins on overlap; regions with < 3 vertices skipped.",
    notes=("index.csv: mpp from the XML MicronsPerPixel attribute; regions = rasterised regions; "
           "overlap_px = pixels claimed by more than one region.",),
)


@dataclass(frozen=True)
class AperioAnnotation:
    polygons: list[np.ndarray]  # each (n, 2) float: X, Y (1-based, as in the file)
    microns_per_pixel: float | None
    skipped: int  # regions with < 3 vertices


def read_xml_root(path_or_bytes: str | os.PathLike | bytes, what: str = "XML") -> tuple[ET.Element, str]:
    """Parse an XML file or bytes, gunzipping when compressed; returns (root, name for messages)."""
    if isinstance(path_or_bytes, bytes | bytearray):
        name, data = f"<{what} bytes>", bytes(path_or_bytes)
    else:
        name = str(path_or_bytes)
        try:
            data = Path(path_or_bytes).read_bytes()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{name}: no such {what} file") from err
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{name}: corrupt gzip stream ({err}); expected a gzipped {what} file") from err
    try:
        return ET.fromstring(data), name
    except ET.ParseError as err:
        raise ValueError(f"{name}: not well-formed XML ({err}); expected an Aperio {what} annotation") from err


def region_vertices(region: ET.Element, name: str) -> np.ndarray:
    """(n, 2) float array of a Region's Vertex (X, Y) attributes."""
    try:
        points = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"{name}: Region Id={region.get('Id')} has a Vertex without numeric X and Y attributes ({err})"
        ) from err
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def parse_aperio_xml(path_or_bytes: str | os.PathLike | bytes) -> AperioAnnotation:
    """Polygons of every `Annotation/Regions/Region` in document order."""
    root, name = read_xml_root(path_or_bytes, "Aperio XML")
    regions = list(root.iter("Region"))
    if root.tag != "Annotations" and not regions:
        raise ValueError(f"{name}: root element <{root.tag}> has no Region; expected Aperio <Annotations> XML")
    polygons, skipped = [], 0
    for region in regions:
        vertices = region_vertices(region, name)
        if len(vertices) < 3:
            skipped += 1
            continue
        polygons.append(vertices)
    mpp = root.get("MicronsPerPixel")
    return AperioAnnotation(polygons, float(mpp) if mpp else None, skipped)


def rasterise_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Instance map with polygon k as id k + 1 (later wins) and the number of pixels claimed twice or more.

    Vertices are 1-based (X, Y): drawn at rows Y - 1, cols X - 1, clipped to `shape`.
    """
    label = np.zeros(shape, dtype=np.int32)
    overlap = 0
    for k, vertices in enumerate(polygons, start=1):
        rows, cols = polygon(vertices[:, 1] - 1, vertices[:, 0] - 1, shape=shape)
        overlap += int(np.count_nonzero(label[rows, cols]))
        label[rows, cols] = k
    return label, overlap


def rasterise_aperio_xml(path_or_bytes: str | os.PathLike | bytes, shape: tuple[int, int]) -> np.ndarray:
    """int32 instance map of an Aperio XML file (`.xml` / `.xml.gz`) or its bytes: ids 1..N in region order."""
    label, _ = rasterise_polygons(parse_aperio_xml(path_or_bytes).polygons, tuple(shape))
    return label


def convert_monuseg(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False, check_counts: bool = True
) -> Path:
    """`<src>/{MoNuSeg 2018 Training Data, MoNuSegTestData}/**/<id>.{tif,xml[.gz]}` -> `<dst>/MoNuSeg/{train,test}`."""
    src = Path(src)
    split_dirs = find_split_dirs(src, SPLIT_DIRS, "MoNuSeg")
    with DatasetWriter(dst, DATASET, overwrite=overwrite) as writer:
        for split, folder in split_dirs.items():
            images = files_by_stem(folder, IMAGE_SUFFIXES, recursive=True)
            annotations = files_by_stem(folder, XML_SUFFIXES, recursive=True)
            for image_id in progress(pair_files(images, annotations, folder, "Aperio XML"), DATASET, split):
                image = read_image(images[image_id])
                annotation = parse_aperio_xml(annotations[image_id])
                label, overlap = rasterise_polygons(annotation.polygons, image.shape[:2])
                if overlap:
                    log.info("%s: %d px claimed by more than one region (later region kept)", image_id, overlap)
                writer.add(
                    split, image_id, image, label, source=annotations[image_id], modality="histopathology",
                    mpp=annotation.microns_per_pixel, regions=len(annotation.polygons), overlap_px=overlap,
                )
        return writer.finish(INFO, src=src, expected=EXPECTED if check_counts else None)
