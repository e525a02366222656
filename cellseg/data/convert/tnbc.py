"""TNBC (Naylor et al.): 50 H&E 512 x 512 images `Slide_XX/<id>.png` with binary ground truth `GT_XX/<id>.png`.

The ground truth is binary, so instances are the 8-connected components of the foreground: touching nuclei merge
(the same practice as COIN). Split as in COIN: 40 train / 10 test (test ids listed below).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.measure import label as connected_components

from cellseg.data.convert.common import (
    DatasetWriter,
    SourceInfo,
    files_by_stem,
    pair_files,
    progress,
    require_dir,
)
from cellseg.utils.io import read_image

DATASET = "TNBC"
COIN_TEST_IDS = ("01_1", "01_4", "01_7", "02_3", "03_3", "04_5", "05_2", "08_1", "10_4", "11_2")
EXPECTED = {"train": (40,), "test": (10,)}
_SLIDE_DIR = re.compile(r"^Slide_(\w+)$", re.IGNORECASE)
INFO = SourceInfo(
    title="TNBC nuclei segmentation (triple-negative breast cancer, H&E, 40x, 512 x 512)",
    citation="Naylor et al., 'Segmentation of nuclei in histopathology images by deep regression of the distance "
    "map', IEEE TMI 38(2), 2019",
    origin="zenodo.org/record/1175282 (TNBC_NucleiSegmentation: Slide_XX/, GT_XX/)",
    licence=None,
    conversion="instances = 8-connected components of the binary GT (touching nuclei merge, as in COIN); "
    f"split as in the COIN repository: test = {', '.join(COIN_TEST_IDS)}, train = the other 40.",
    notes=("index.csv: slide = the XX of Slide_XX.",),
)


def binary_to_instances(mask: np.ndarray) -> np.ndarray:
    """int32 instance map: 8-connected components of mask > 0, numbered in raster order."""
    return connected_components(np.asarray(mask) > 0, connectivity=2).astype(np.int32)


def read_binary_ground_truth(path: str | os.PathLike) -> np.ndarray:
    """bool mask of a binary GT PNG (0/255 or 0/1; grey, RGB or RGBA with equal colour channels)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read ground truth ({err}); expected a binary PNG") from err
    if array.ndim == 3:
        colour = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        if (colour != colour[..., :1]).any():
            raise ValueError(f"{path}: colour channels differ; expected a binary (0/255) grey mask")
        array = colour[..., 0]
    values = np.unique(array)
    if array.ndim != 2 or values.size > 2:
        raise ValueError(
            f"{path}: {values.size} distinct values {values[:6].tolist()}...; expected a binary 0/255 mask"
        )
    return array > 0


def convert_tnbc(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False, check_counts: bool = True
) -> Path:
    """`<src>/Slide_XX/*.png` + `<src>/GT_XX/*.png` -> `<dst>/TNBC/{train,test}` (COIN split)."""
    src = require_dir(Path(src), "the TNBC release folder holding Slide_XX/ and GT_XX/")
    slides = sorted(p for p in src.iterdir() if p.is_dir() and _SLIDE_DIR.match(p.name))
    if not slides:
        found = sorted(p.name for p in src.iterdir())
        raise FileNotFoundError(f"{src}: no Slide_XX folder; expected Slide_XX/ and GT_XX/ folders, found {found}")
    with DatasetWriter(dst, DATASET, overwrite=overwrite) as writer:
        for slide_dir in slides:
            slide = _SLIDE_DIR.match(slide_dir.name).group(1)
            gt_dir = src / f"GT_{slide}"
            if not gt_dir.is_dir():
                raise FileNotFoundError(f"{gt_dir}: missing ground-truth folder for {slide_dir}")
            images = files_by_stem(slide_dir, (".png",))
            masks = files_by_stem(gt_dir, (".png",))
            for image_id in progress(pair_files(images, masks, slide_dir, "GT mask"), DATASET, f"Slide_{slide}"):
                image = read_image(images[image_id])
                label = binary_to_instances(read_binary_ground_truth(masks[image_id]))
                split = "test" if image_id in COIN_TEST_IDS else "train"
                writer.add(split, image_id, image, label, source=masks[image_id], modality="histopathology", slide=slide)
        return writer.finish(INFO, src=src, expected=EXPECTED if check_counts else None)
