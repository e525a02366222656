"""PanNuke: per fold `images.npy` (N, 256, 256, 3), `masks.npy` (N, 256, 256, 6) and `types.npy` (N,) tissue names.

Mask channels 0-4 hold class-wise instance ids (neoplastic, inflammatory, connective, dead, epithelial), channel 5
is background. The instance map numbers the instances of channel 0, then 1, ... (ids ascending within a channel)
as 1..N, so ids that repeat across channels never collide; the class of each instance goes to
instance_classes.csv. Split as in the papers: folds 1 + 2 -> train, fold 3 -> test; ids are `fold<k>_<index>`.
Images without any nucleus exist and are kept (docs/metrics.md#empty-images).
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from cellseg.data.convert.common import DatasetWriter, SourceInfo, progress, require_dir

log = logging.getLogger(__name__)

DATASET = "PanNuke"
CLASS_NAMES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
FOLD_SPLITS = {1: "train", 2: "train", 3: "test"}
FOLD_SIZES = {1: 2656, 2: 2523, 3: 2722}
EXPECTED = {"train": (FOLD_SIZES[1] + FOLD_SIZES[2],), "test": (FOLD_SIZES[3],)}
ARRAY_NAMES = ("images.npy", "masks.npy", "types.npy")
_FOLD = re.compile(r"fold[\s_-]*(\d+)", re.IGNORECASE)
INFO = SourceInfo(
    title="PanNuke: pan-cancer nuclei instance segmentation and classification, H&E, 40x, 256 x 256, 19 tissues",
    citation="Gamper et al., 'PanNuke: an open pan-cancer histology dataset for nuclei instance segmentation and "
    "classification', ECDP 2019; Gamper et al., arXiv:2003.10778, 2020",
    origin="warwick.ac.uk/fac/cross_fac/tia/data/pannuke: Fold 1-3/{images,masks}/fold<k>/*.npy",
    licence="CC BY-NC-SA 4.0 (as stated on the release page; verify before redistributing)",
    conversion="instance map = channels 0-4 of masks.npy renumbered 1..N (channel order, ids ascending; a later "
    "channel wins on overlap); float images rounded to uint8; folds 1 + 2 -> train, fold 3 -> test.",
    notes=("index.csv: fold, index (position in the fold's arrays), tissue (types.npy); instance classes in "
           "<split>/instance_classes.csv (" + ", ".join(CLASS_NAMES) + ").",),
)


def pannuke_instance_map(masks: np.ndarray, source: str = "masks") -> tuple[np.ndarray, dict[int, str], int]:
    """(int32 instance map, {id: class name}, overlap px) from one H x W x 6 PanNuke mask."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[2] != 6:
        raise ValueError(f"{source}: mask has shape {masks.shape}; expected H x W x 6 (5 class channels + background)")
    label = np.zeros(masks.shape[:2], dtype=np.int32)
    classes: dict[int, str] = {}
    overlap, next_id = 0, 1
    for channel, name in enumerate(CLASS_NAMES):
        ids = np.rint(masks[..., channel]).astype(np.int64)
        for old in np.unique(ids[ids > 0]):
            pixels = ids == old
            overlap += int(np.count_nonzero(label[pixels]))
            label[pixels] = next_id
            classes[next_id] = name
            next_id += 1
    present = set(np.unique(label).tolist())
    return label, {i: c for i, c in classes.items() if i in present}, overlap


def to_uint8_image(image: np.ndarray, source: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 255:
        raise ValueError(f"{source}: image values outside [0, 255]; expected 0-255 RGB values")
    return np.rint(image).astype(np.uint8)


def find_folds(src: Path) -> dict[int, dict[str, Path]]:
    """{fold: {array name: path}} from the fold number in each .npy file's path below `src`."""
    folds: dict[int, dict[str, Path]] = defaultdict(dict)
    for path in sorted(src.rglob("*.npy")):
        if path.name not in ARRAY_NAMES:
            continue
        numbers = {int(m.group(1)) for part in path.relative_to(src).parts[:-1] for m in _FOLD.finditer(part)}
        if len(numbers) != 1:
            raise ValueError(f"{path}: cannot tell its fold from the folder names; expected e.g. 'Fold 1/images/fold1/'")
        fold = numbers.pop()
        if path.name in folds[fold]:
            raise ValueError(f"two {path.name} for fold {fold}: {folds[fold][path.name]} and {path}; keep only one")
        folds[fold][path.name] = path
    if not folds:
        raise FileNotFoundError(f"{src}: no images.npy / masks.npy / types.npy below; expected 'Fold k/images/foldk/*.npy'")
    for fold, arrays in folds.items():
        missing = [n for n in ARRAY_NAMES if n not in arrays]
        if missing:
            raise FileNotFoundError(f"{src}: fold {fold} lacks {missing}; expected images.npy, masks.npy and types.npy")
        if fold not in FOLD_SPLITS:
            raise ValueError(f"{arrays['images.npy']}: fold {fold}; PanNuke has folds 1, 2 and 3")
    return dict(sorted(folds.items()))


def _load_fold(arrays: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.load(arrays["images.npy"], mmap_mode="r")
    masks = np.load(arrays["masks.npy"], mmap_mode="r")
    try:
        types = np.load(arrays["types.npy"], allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{arrays['types.npy']}: {err}; expected a plain string array of tissue names") from err
    n = len(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{arrays['images.npy']}: shape {images.shape}; expected (N, H, W, 3)")
    if masks.shape[:3] != images.shape[:3] or masks.ndim != 4 or masks.shape[3] != 6:
        raise ValueError(f"{arrays['masks.npy']}: shape {masks.shape}; expected {(n, *images.shape[1:3], 6)}")
    if types.shape != (n,):
        raise ValueError(f"{arrays['types.npy']}: shape {types.shape}; expected ({n},) tissue names")
    return images, masks, types


def convert_pannuke(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False, check_counts: bool = True
) -> Path:
    """`<src>/Fold k/{images,masks}/foldk/*.npy` -> `<dst>/PanNuke/{train,test}` (folds 1 + 2 / fold 3)."""
    src = require_dir(Path(src), "the PanNuke release folder holding 'Fold 1', 'Fold 2', 'Fold 3'")
    folds = find_folds(src)
    with DatasetWriter(dst, DATASET, overwrite=overwrite) as writer:
        for fold, arrays in folds.items():
            images, masks, types = _load_fold(arrays)
            if check_counts and len(images) != FOLD_SIZES[fold]:
                raise ValueError(
                    f"{arrays['images.npy']}: {len(images)} images; fold {fold} of PanNuke has {FOLD_SIZES[fold]} "
                    "(pass --no-count-check to convert a modified copy)"
                )
            for index in progress(range(len(images)), DATASET, f"fold{fold}"):
                where = f"{arrays['masks.npy']}[{index}]"
                label, classes, overlap = pannuke_instance_map(masks[index], where)
                if overlap:
                    log.info("%s: %d px in more than one class channel (later channel kept)", where, overlap)
                image = to_uint8_image(images[index], f"{arrays['images.npy']}[{index}]")
                writer.add(
                    FOLD_SPLITS[fold], f"fold{fold}_{index:04d}", image, label, source=where,
                    modality="histopathology", instance_classes=classes, fold=fold, index=index,
                    tissue=str(types[index]),
                )
        return writer.finish(INFO, src=src, expected=EXPECTED if check_counts else None)
