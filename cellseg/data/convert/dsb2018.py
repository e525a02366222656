"""DSB2018 / BBBC038: `<id>/images/<id>.png` (RGBA) + `<id>/masks/*.png` (one binary PNG per nucleus); stage-1 test
masks as run-length encodings in `stage1_solution.csv`.

Masks are merged in sorted file order as ids 1..N (a later mask wins on overlap); RLE is 1-based (start, length)
pairs in column-major order (top to bottom, then left to right). The alpha channel is dropped. The modality of
every image is named by k-means over all converted images (cellseg.data.modality) and stored in index.csv.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cellseg.data.convert.common import (
    DatasetWriter,
    SourceInfo,
    find_split_dirs,
    progress,
    require_dir,
)
from cellseg.data.modality import classify_modalities, mean_hsv
from cellseg.utils.io import read_image

log = logging.getLogger(__name__)

DATASET = "DSB2018"
SPLITS = ("stage1_train", "stage1_test")
SOLUTION_CSV = "stage1_solution.csv"
SOLUTION_COLUMNS = ("ImageId", "EncodedPixels", "Height", "Width")
EXPECTED = {"stage1_train": (670, 664), "stage1_test": (65,)}
INFO = SourceInfo(
    title="2018 Data Science Bowl nuclei (BBBC038v1): fluorescence, bright-field and H&E, various sizes",
    citation="Caicedo et al., Nature Methods 16, 1247-1253, 2019",
    origin="kaggle.com/c/data-science-bowl-2018; bbbc.broadinstitute.org/BBBC038",
    licence="CC0 1.0 (public domain); please cite Caicedo et al. 2019",
    conversion="alpha channel dropped; per-nucleus binary masks merged in sorted file order as ids 1..N (later mask "
    "wins on overlap); stage-1 test masks decoded from stage1_solution.csv (1-based, column-major RLE) in row order.",
    notes=(
        "index.csv: masks = mask files (or RLE rows) per image; overlap_px = pixels claimed by more than one mask; "
        "modality = k-means naming of cellseg.data.modality over all converted images.",
    ),
)


def rle_decode(rle: str, shape: Sequence[int]) -> np.ndarray:
    """bool H x W mask of a run-length string '1-based start, length, ...' in column-major order."""
    height, width = int(shape[0]), int(shape[1])
    text = "" if rle is None or (isinstance(rle, float) and np.isnan(rle)) else str(rle).strip()
    flat = np.zeros(height * width, dtype=bool)
    if not text:
        return flat.reshape(width, height).T
    try:
        numbers = np.asarray(text.split(), dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"RLE {text[:40]!r}: expected integers 'start length start length ...'") from err
    if numbers.size % 2:
        raise ValueError(f"RLE {text[:40]!r}: odd number of values; expected (start, length) pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any() or (lengths < 0).any() or (starts + lengths > flat.size).any():
        raise ValueError(f"RLE {text[:40]!r}: a run lies outside the {height} x {width} image (starts are 1-based)")
    for start, length in zip(starts, lengths, strict=True):
        flat[start : start + length] = True
    return flat.reshape(width, height).T


def rle_encode(mask: np.ndarray) -> str:
    """Run-length string of a 2-D mask: 1-based (start, length) pairs, column-major (Kaggle DSB2018 format)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask has shape {mask.shape}; expected H x W")
    flat = np.concatenate([[False], mask.T.reshape(-1) > 0, [False]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # 0-based run starts and ends, alternating
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read mask ({err}); expected a binary PNG") from err
    if array.ndim == 3:
        array = array[..., :3].max(axis=2) if array.shape[2] >= 3 else array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: mask has shape {array.shape}; expected a single-channel H x W binary mask")
    return array > 0


def merge_masks(masks: Iterable[np.ndarray], names: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """Mask k -> id k + 1, later wins; returns (int32 label, pixels claimed by more than one mask)."""
    label, overlap = None, 0
    for k, mask in enumerate(masks, start=1):
        if label is None:
            label = np.zeros(mask.shape, dtype=np.int32)
        elif mask.shape != label.shape:
            name = names[k - 1] if names else f"mask {k}"
            raise ValueError(f"{name}: mask has shape {mask.shape}; expected {label.shape} like the first mask")
        overlap += int(np.count_nonzero(label[mask]))
        label[mask] = k
    if label is None:
        raise ValueError("no mask to merge; expected at least one binary mask")
    return label, overlap


def merge_binary_masks(paths: Iterable[str | os.PathLike]) -> np.ndarray:
    """int32 instance map from one binary mask file per nucleus, in sorted path order (later wins)."""
    paths = sorted(Path(p) for p in paths)
    label, _ = merge_masks((read_binary_mask(p) for p in paths), [str(p) for p in paths])
    return label


def read_solution_csv(path: Path) -> dict[str, pd.DataFrame]:
    """Rows of stage1_solution.csv grouped by ImageId, in file order."""
    frame = pd.read_csv(path, dtype={"ImageId": str, "EncodedPixels": str})
    missing = [c for c in SOLUTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(SOLUTION_COLUMNS)} (+ Usage)")
    return {image_id: rows for image_id, rows in frame.groupby("ImageId", sort=False)}


def _label_from_rle(rows: pd.DataFrame, shape: tuple[int, int], where: str) -> tuple[np.ndarray, int, int]:
    sizes = set(zip(rows["Height"].astype(int), rows["Width"].astype(int), strict=True))
    if sizes != {shape}:
        raise ValueError(f"{where}: Height/Width {sorted(sizes)} differ from the image size {shape}")
    masks = []
    for rle in rows["EncodedPixels"]:
        try:
            masks.append(rle_decode(rle, shape))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    label, overlap = merge_masks(masks)
    return label, overlap, len(masks)


def _label_from_mask_folder(folder: Path) -> tuple[np.ndarray, int, int]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not paths:
        raise FileNotFoundError(f"{folder}: no mask PNG; expected one binary PNG per nucleus")
    label, overlap = merge_masks((read_binary_mask(p) for p in paths), [str(p) for p in paths])
    return label, overlap, len(paths)


def _image_path(sample_dir: Path) -> Path:
    path = sample_dir / "images" / f"{sample_dir.name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image; expected <id>/images/<id>.png in the DSB2018 layout")
    return path


def convert_dsb2018(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_counts: bool = True,
    seed: int = 0,
) -> Path:
    """`<src>/stage1_train/<id>/...`, `<src>/stage1_test/<id>/...` (+ `<src>/stage1_solution.csv`) -> `<dst>/DSB2018`."""
    src = require_dir(Path(src), "the DSB2018 release folder (stage1_train/, stage1_test/, stage1_solution.csv)")
    split_dirs = find_split_dirs(src, {s: [s] for s in SPLITS}, "DSB2018")
    features: list[tuple[str, str, np.ndarray]] = []
    with DatasetWriter(dst, DATASET, overwrite=overwrite) as writer:
        for split, folder in split_dirs.items():
            solution = None
            samples = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            for sample in progress(samples, DATASET, split):
                image = read_image(_image_path(sample))
                if (sample / "masks").is_dir():
                    label, overlap, n_masks = _label_from_mask_folder(sample / "masks")
                    source = sample / "masks"
                elif split == "stage1_test":
                    solution = solution if solution is not None else _load_solution(src, folder)
                    if sample.name not in solution:
                        raise ValueError(f"{src / SOLUTION_CSV}: no row for image {sample.name}")
                    source = src / SOLUTION_CSV
                    label, overlap, n_masks = _label_from_rle(solution[sample.name], image.shape[:2], str(source))
                else:
                    raise FileNotFoundError(f"{sample / 'masks'}: missing mask folder; expected <id>/masks/*.png")
                writer.add(split, sample.name, image, label, source=source, masks=n_masks, overlap_px=overlap)
                features.append((split, sample.name, mean_hsv(image)))
        _set_modalities(writer, features, seed)
        return writer.finish(INFO, src=src, expected=EXPECTED if check_counts else None)


def _load_solution(src: Path, folder: Path) -> dict[str, pd.DataFrame]:
    path = src / SOLUTION_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; the stage-1 test images in {folder} have no masks/ folder, so their masks are read "
            f"from the RLE of {SOLUTION_CSV} (columns {', '.join(SOLUTION_COLUMNS)})"
        )
    return read_solution_csv(path)


def _set_modalities(writer: DatasetWriter, features: list[tuple[str, str, np.ndarray]], seed: int) -> None:
    """k-means naming over all converted images (one clustering, so train and test share the centroids)."""
    stacked = np.stack([f for _, _, f in features])
    if len(np.unique(stacked, axis=0)) < 3:
        log.warning("fewer than 3 distinct colour profiles among %d images: modality left empty", len(features))
        return
    for (split, image_id, _), name in zip(features, classify_modalities(stacked, seed=seed), strict=True):
        writer.set_field(split, image_id, "modality", name)
