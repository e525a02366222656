"""MoNuSAC 2020: `<patient>/<patient>_<k>.{tif,xml}` sub-images with Aperio-style XML, one Annotation per class.

Each `Annotation` names its class in `Attributes/Attribute@Name` (Epithelial, Lymphocyte, Macrophage, Neutrophil,
Ambiguous). Nuclei polygons follow the MoNuSeg convention (rows Y - 1, cols X - 1; XML order; later wins; < 3
vertices skipped) and become class-agnostic ids; classes go to instance_classes.csv. "Ambiguous" regions become
`labels/<id>_ignore.png` (1 = excluded from evaluation), not instances.
"""

from __future__ import annotations

import logging
import os
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
from cellseg.data.convert.monuseg import rasterise_polygons, read_xml_root, region_vertices
from cellseg.utils.io import read_image

log = logging.getLogger(__name__)

DATASET = "MoNuSAC"
CLASSES = ("Epithelial", "Lymphocyte", "Macrophage", "Neutrophil")
AMBIGUOUS = "Ambiguous"
SPLIT_DIRS = {
    "train": ("MoNuSAC_images_and_annotations", "MoNuSAC_images_and_annotation",
              "Training_MoNuSAC_images_and_annotations", "train"),
    "test": ("MoNuSAC Testing Data and Annotations", "MoNuSAC_Testing_Data_and_Annotations", "test"),
}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
INFO = SourceInfo(
    title="MoNuSAC 2020 (multi-organ nuclei segmentation and classification), H&E, 40x, lung/prostate/kidney/breast",
    citation="Verma et al., 'MoNuSAC2020: A Multi-organ Nuclei Segmentation and Classification Challenge', "
    "IEEE TMI 40(12), 2021",
    origin="monusac-2020.grand-challenge.org/Data (MoNuSAC_images_and_annotations, MoNuSAC Testing Data and Annotations)",
    licence="CC BY-NC-SA 4.0",
    conversion="XML polygons rasterised like MoNuSeg (rows Y - 1, cols X - 1, XML order, later wins, < 3 vertices "
    "skipped) into class-agnostic ids; classes in <split>/instance_classes.csv; 'Ambiguous' regions -> "
    "labels/<id>_ignore.png (1 = ignore), not instances.",
    notes=("index.csv: patient = parent folder; ambiguous_regions; overlap_px = pixels claimed by more than one nucleus.",
           "No official image counts are checked (only image/XML pairing): the counts were not verified here."),
)


@dataclass(frozen=True)
class MonusacAnnotation:
    polygons: list[np.ndarray]
    classes: list[str]
    ambiguous: list[np.ndarray]


def parse_monusac_xml(path_or_bytes: str | os.PathLike | bytes) -> MonusacAnnotation:
    """Nucleus polygons with their class names, and the ambiguous-region polygons, in XML order."""
    root, name = read_xml_root(path_or_bytes, "MoNuSAC XML")
    polygons, classes, ambiguous = [], [], []
    for annotation in root.iter("Annotation"):
        attribute = annotation.find("Attributes/Attribute")
        if attribute is None or not attribute.get("Name"):
            raise ValueError(f"{name}: Annotation Id={annotation.get('Id')} has no Attributes/Attribute@Name class")
        klass = _class_name(attribute.get("Name"), name)
        for region in annotation.iter("Region"):
            vertices = region_vertices(region, name)
            if len(vertices) < 3:
                continue
            if klass == AMBIGUOUS:
                ambiguous.append(vertices)
            else:
                polygons.append(vertices)
                classes.append(klass)
    return MonusacAnnotation(polygons, classes, ambiguous)


def _class_name(raw: str, name: str) -> str:
    for known in (*CLASSES, AMBIGUOUS):
        if raw.strip().lower() == known.lower():
            return known
    raise ValueError(f"{name}: unknown class {raw!r}; expected one of {[*CLASSES, AMBIGUOUS]}")


def rasterise_monusac(annotation: MonusacAnnotation, shape: tuple[int, int]):
    """(int32 label, bool ignore mask, {id: class}, overlap px)."""
    label, overlap = rasterise_polygons(annotation.polygons, shape)
    ignore = np.zeros(shape, dtype=bool)
    for vertices in annotation.ambiguous:
        ignore[polygon(vertices[:, 1] - 1, vertices[:, 0] - 1, shape=shape)] = True
    present = set(np.unique(label).tolist())
    classes = {k: c for k, c in enumerate(annotation.classes, start=1) if k in present}
    return label, ignore, classes, overlap


def convert_monusac(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False, check_counts: bool = True
) -> Path:
    """`<src>/{MoNuSAC_images_and_annotations, MoNuSAC Testing Data and Annotations}/<patient>/<id>.{tif,xml}`."""
    src = Path(src)
    split_dirs = find_split_dirs(src, SPLIT_DIRS, "MoNuSAC")
    with DatasetWriter(dst, DATASET, overwrite=overwrite) as writer:
        for split, folder in split_dirs.items():
            annotations = files_by_stem(folder, (".xml",), recursive=True)
            images = files_by_stem(folder, IMAGE_SUFFIXES, recursive=True)
            _explain_svs_only(folder, annotations, images)
            for image_id in progress(pair_files(images, annotations, folder, "XML annotation"), DATASET, split):
                image = read_image(images[image_id])
                annotation = parse_monusac_xml(annotations[image_id])
                label, ignore, classes, overlap = rasterise_monusac(annotation, image.shape[:2])
                writer.add(
                    split, image_id, image, label, source=annotations[image_id], modality="histopathology",
                    ignore=ignore if ignore.any() else None, instance_classes=classes,
                    patient=annotations[image_id].parent.name,
                    ambiguous_regions=len(annotation.ambiguous), overlap_px=overlap,
                )
        # check_counts has no effect: the official counts were not verified here, only image/XML pairing is checked.
        return writer.finish(INFO, src=src, expected=None)


def _explain_svs_only(folder: Path, annotations: dict[str, Path], images: dict[str, Path]) -> None:
    svs_only = sorted(i for i in annotations if i not in images and annotations[i].with_suffix(".svs").is_file())
    if svs_only:
        raise ValueError(
            f"{annotations[svs_only[0]].with_suffix('.svs')}: only an .svs image for {len(svs_only)} XML file(s) in "
            f"{folder}; expected the .tif sub-images of the release beside each .xml (convert .svs to .tif first)"
        )
