"""Overlay gallery: the same test crops across every group (ground-truth outlines in green over predicted
outlines in red, from each group's first seed), and each group's best and worst test images by AJI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg.reporting.tables import Group
from cellseg.utils.io import read_image, read_label, write_image
from cellseg.utils.overlay import as_rgb_uint8, overlay_instances

CROP = 256  # px: large enough to see nuclei, small enough that a row of methods fits the page


@dataclass
class Tile:
    image_id: str
    group: str
    file: str  # relative to the report folder
    aji: float | None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def source_image(gt_dir: Path, image_id: str) -> Path | None:
    """The test image beside the labels folder (`<split>/images/<id>.*`)."""
    matches = sorted((gt_dir.parent / "images").glob(f"{image_id}.*"))
    return matches[0] if matches else None


def centre_crop(array: np.ndarray, size: int = CROP) -> np.ndarray:
    top, left = max(0, (array.shape[0] - size) // 2), max(0, (array.shape[1] - size) // 2)
    return array[top:top + size, left:left + size]


def render(group: Group, image_id: str, folder: Path, kind: str) -> Tile | None:
    run = group.first
    if run.pred_dir is None or run.gt_dir is None:
        return None
    image_path, pred_path = source_image(run.gt_dir, image_id), run.pred_dir / f"{image_id}.png"
    gt_path = run.gt_dir / f"{image_id}.png"
    if image_path is None or not pred_path.is_file() or not gt_path.is_file():
        return None
    image = as_rgb_uint8(read_image(image_path))
    overlay = overlay_instances(image, read_label(pred_path), read_label(gt_path))
    relative = Path("gallery") / kind / slug(group.name) / f"{slug(image_id)}.png"
    write_image(folder / relative, centre_crop(overlay))
    scores = group.per_image()
    return Tile(image_id, group.name, relative.as_posix(), float(scores[image_id]) if image_id in scores else None)


def common_images(groups: list[Group], count: int) -> list[str]:
    """Test images every group scored, the same for every group (sorted ids, the first `count`)."""
    shared = set.intersection(*(set(g.per_image().index) for g in groups)) if groups else set()
    return sorted(shared)[:count]


def same_crops(groups: list[Group], folder: Path, count: int = 3) -> list[dict]:
    """Per dataset: its groups' names and, for each shared test image, one tile per group in that order."""
    sections = []
    for dataset in sorted({g.first.dataset for g in groups}):
        members = [g for g in groups if g.first.dataset == dataset]
        rows = [(image_id, [render(g, image_id, folder, "same") for g in members])
                for image_id in common_images(members, count)]
        sections.append({"dataset": dataset, "groups": [g.name for g in members], "rows": rows})
    return sections


def best_and_worst(groups: list[Group], folder: Path) -> list[tuple[str, Tile | None, Tile | None]]:
    rows = []
    for group in groups:
        scores = group.per_image().sort_values()
        if scores.empty:
            continue
        rows.append((group.name, render(group, scores.index[-1], folder, "best"),
                     render(group, scores.index[0], folder, "worst")))
    return rows
