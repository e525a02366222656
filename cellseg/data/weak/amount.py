"""How much annotation a run's training images carry: the figure a lab pays for (instances drawn, scribble pixels,
tiles labelled), counted from the cached weak labels, never from ground truth the regime does not see."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cellseg.data.layout import SplitLayout
from cellseg.data.weak.base import WeakLabels
from cellseg.data.weak.scribble import SCRIBBLE_BG, SCRIBBLE_FG


def instance_amount(label: np.ndarray) -> dict[str, int]:
    """A full instance map: how many instances, how many of its pixels belong to one."""
    ids = np.unique(label)
    return {"instances": int((ids > 0).sum()), "labelled_pixels": int((label > 0).sum()), "pixels": int(label.size)}


def scribble_amount(scribble: np.ndarray) -> dict[str, int]:
    """A scribble map: pixels marked background or foreground (every other value is unlabelled)."""
    foreground = int((scribble == SCRIBBLE_FG).sum())
    return {"scribble_pixels": foreground + int((scribble == SCRIBBLE_BG).sum()),
            "foreground_scribble_pixels": foreground, "pixels": int(scribble.size)}


def tile_amount(tiles: np.ndarray) -> dict[str, int]:
    """An image's (N, 4) tile table (x, y, size, label): tiles labelled, tiles labelled positive, their area."""
    tiles = np.asarray(tiles, dtype=np.int64).reshape(-1, 4)
    return {"tiles": len(tiles), "positive_tiles": int((tiles[:, 3] > 0).sum()),
            "tile_pixels": int((tiles[:, 2] ** 2).sum())}


AMOUNT_OF_FORMAT = {"instance": instance_amount, "scribble": scribble_amount, "tiles": tile_amount}


def annotation_used(weak_labels: WeakLabels, layout: SplitLayout, ids: Sequence[str]) -> dict:
    """Totals over the training images `ids`: `format`, `images`, `labelled_images` and the format's counts
    (see the *_amount functions). `weak_labels.prepare` finds its cache, so nothing is generated twice."""
    paths = weak_labels.prepare(layout, ids)
    targets = {image_id: weak_labels.read_target(paths[image_id]) for image_id in ids if image_id in paths}
    return amount_of_targets(weak_labels.target_format, ids, targets)


def amount_of_targets(target_format: str, ids: Sequence[str], targets: Mapping[str, np.ndarray]) -> dict:
    """Totals of the targets a run trained on (`targets`: image id -> target in `target_format`), for runners
    that keep their own copy of the weak labels (Cyclic's cached tile tables)."""
    totals: dict = {"format": target_format, "images": len(ids), "labelled_images": len(targets)}
    count = AMOUNT_OF_FORMAT.get(target_format)
    if count is None:
        return totals
    for image_id in ids:
        if image_id in targets:
            for key, value in count(targets[image_id]).items():
                totals[key] = totals.get(key, 0) + value
    return totals
