"""CryoNuSeg: 30 H&E 512 x 512 frozen-section images (10 organs x 3), instance label masks per annotator (TIFF).

Release layout (Kaggle "segmentation-of-nuclei-in-cryosectioned-he-images"):
`tissue images/<Organ>_NN.tif` and, per annotator, `.../label masks modify/<Organ>_NN.tif`. Annotator 1's
first-round masks are the default. Split as in COIN: train `*_01`, `*_02` (20), test `*_03` (10).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cellseg.data.convert.common import (
    DatasetWriter,
    SourceInfo,
    files_by_stem,
    find_child_dir,
    pair_files,
    progress,
    require_dir,
)
from cellseg.utils.io import read_image, read_label

DATASET = "CryoNuSeg"
IMAGE_DIR = "tissue images"
_A1 = "Annotator 1 (biologist)"
_A1R2 = "Annotator 1 (biologist second round of manual marks up)"
_A2 = "Annotator 2 (bioinformatician)"
# Label folders tried in order per annotator (the zip nests some annotator folders twice).
ANNOTATOR_DIRS = {
    "annotator1": (f"{_A1}/label masks modify", f"{_A1}/{_A1}/label masks modify"),
    "annotator1_round2": (f"{_A1R2}/{_A1R2}/label masks modify", f"{_A1R2}/label masks modify"),
    "annotator2": (f"{_A2}/{_A2}/label masks modify", f"{_A2}/label masks modify"),
}
EXPECTED = {"train": (20,), "test": (10,)}
_IMAGE_ID = re.compile(r"^(?P<organ>.+)_(?P<number>\d+)$")
INFO = SourceInfo(
    title="CryoNuSeg: nuclei in cryosectioned H&E images (10 organs x 3 images, 512 x 512, TCGA)",
    citation="Mahbod et al., Computers in Biology and Medicine 132, 104349, 2021 (doi:10.1016/j.compbiomed.2021.104349)",
    origin="kaggle.com/datasets/ipateam/segmentation-of-nuclei-in-cryosectioned-he-images; github.com/masih4/CryoNuSeg",
    licence=None,
    conversion="instance label masks of one annotator ('label masks modify' TIFF) stored as 16-bit PNG unchanged; "
    "split as in COIN: train = *_01, *_02, test = *_03.",
    notes=("index.csv: organ = the image id without its _NN suffix; annotator = the label folder used.",),
)


def find_label_dir(src: Path, annotator: str) -> Path:
    if annotator not in ANNOTATOR_DIRS:
        raise ValueError(f"unknown CryoNuSeg annotator {annotator!r}; expected one of {sorted(ANNOTATOR_DIRS)}")
    for relative in ANNOTATOR_DIRS[annotator]:
        if (src / relative).is_dir():
            return src / relative
    found = sorted(p.name for p in src.iterdir() if p.is_dir())
    raise FileNotFoundError(
        f"{src}: no label folder for {annotator}; expected one of {list(ANNOTATOR_DIRS[annotator])}, found folders {found}"
    )


def split_of(image_id: str, where: Path) -> tuple[str, str]:
    """(split, organ) of an image id such as 'Human_AdrenalGland_03'."""
    match = _IMAGE_ID.match(image_id)
    if not match or int(match["number"]) not in (1, 2, 3):
        raise ValueError(f"{where}: image id {image_id!r} does not end in _01, _02 or _03 as CryoNuSeg ids do")
    return ("test" if int(match["number"]) == 3 else "train"), match["organ"]


def convert_cryonuseg(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_counts: bool = True,
    annotator: str = "annotator1",
) -> Path:
    """`<src>/tissue images/*.tif` + `<src>/<annotator>/label masks modify/*.tif` -> `<dst>/CryoNuSeg/{train,test}`."""
    src = require_dir(Path(src), "the CryoNuSeg release folder holding 'tissue images/' and the annotator folders")
    image_dir = find_child_dir(src, [IMAGE_DIR], "the CryoNuSeg images ('tissue images')")
    label_dir = find_label_dir(src, annotator)
    images = files_by_stem(image_dir, (".tif", ".tiff", ".png"))
    labels = files_by_stem(label_dir, (".tif", ".tiff"))
    with DatasetWriter(dst, DATASET, overwrite=overwrite) as writer:
        for image_id in progress(pair_files(images, labels, image_dir, "label mask"), DATASET, "all"):
            split, organ = split_of(image_id, images[image_id])
            image = read_image(images[image_id])
            label = read_label(labels[image_id])
            writer.add(
                split, image_id, image, label, source=labels[image_id], modality="histopathology",
                organ=organ, annotator=annotator,
            )
        return writer.finish(INFO, src=src, expected=EXPECTED if check_counts else None)
