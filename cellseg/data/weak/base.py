"""The weak-label interface: what a supervision regime hands to the training DataModule."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from cellseg.data.layout import SplitLayout
from cellseg.utils.ignore import IGNORE_CLASS
from cellseg.utils.io import read_label

TARGET_FORMATS = ("instance", "scribble", "tiles", "none")


class WeakLabels(abc.ABC):
    """One supervision regime. `prepare` runs once, outside training, and returns per image the file to train on."""

    kind: ClassVar[str]  # "full" | "annotation_free" | "scribble" | "image_label" (= supervision.kind)
    target_format: ClassVar[str]  # "instance" (int label map, 0 bg) | "scribble" (uint8) | "tiles" (CSV) | "none"
    reads_ground_truth: ClassVar[bool]  # whether prepare() opens the training GT label files
    ignore_index: int = IGNORE_CLASS

    @abc.abstractmethod
    def prepare(self, layout: SplitLayout, ids: Sequence[str]) -> dict[str, Path]:
        """Per image id, the path of its training-target file for this regime (an empty dict for annotation_free)."""

    def read_target(self, path: Path) -> np.ndarray:
        """A training target as written by `prepare`: int32 for instance maps, uint8 for scribbles, the int64
        (N, 4) table (x, y, size, label) of an image's labelled tiles."""
        if self.target_format == "instance":
            return read_label(path)
        if self.target_format == "scribble":
            return read_mask_uint8(path)
        if self.target_format == "tiles":
            # imported here: image_level imports this module
            from cellseg.data.weak.image_level import read_tile_table

            return read_tile_table(path)
        raise ValueError(f"{type(self).__name__} (kind {self.kind!r}) has no training target to read: {path}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, target_format={self.target_format!r})"


def read_mask_uint8(path: str | Path) -> np.ndarray:
    """A single-channel 8-bit PNG (scribbles, ignore maps) as uint8 H x W."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read uint8 mask {path}: {err}") from err
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"mask {path} has shape {array.shape} and dtype {array.dtype}; expected uint8 H x W")
    return array
