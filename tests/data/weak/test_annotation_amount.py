"""Annotation counts per target format, on hand-built targets of known size."""

from __future__ import annotations

import numpy as np

from cellseg.data.weak.amount import annotation_used, instance_amount, scribble_amount, tile_amount
from cellseg.data.weak.base import WeakLabels
from cellseg.reporting.tables import annotation_summary
from cellseg.utils.ignore import IGNORE_CLASS


def test_instance_amount_counts_instances_and_their_pixels():
    label = np.zeros((4, 5), dtype=np.int32)
    label[0, :2] = 3
    label[2:, 3:] = 7
    assert instance_amount(label) == {"instances": 2, "labelled_pixels": 6, "pixels": 20}


def test_scribble_amount_counts_only_background_and_foreground_marks():
    scribble = np.full((3, 4), IGNORE_CLASS, dtype=np.uint8)
    scribble[0, :3] = 1   # foreground strokes
    scribble[2, 1] = 0    # a background stroke
    assert scribble_amount(scribble) == {"scribble_pixels": 4, "foreground_scribble_pixels": 3, "pixels": 12}


def test_tile_amount_counts_tiles_positives_and_area():
    tiles = np.array([[0, 0, 64, 1], [64, 0, 64, 0], [0, 64, 32, 1]], dtype=np.int64)
    assert tile_amount(tiles) == {"tiles": 3, "positive_tiles": 2, "tile_pixels": 2 * 64 * 64 + 32 * 32}
    assert tile_amount(np.zeros((0, 4), dtype=np.int64)) == {"tiles": 0, "positive_tiles": 0, "tile_pixels": 0}


class TwoTables(WeakLabels):
    """Tile tables for images a and c only (b carries no label)."""

    kind, target_format, reads_ground_truth = "image_label", "tiles", False
    tables = {"a": [[0, 0, 8, 1], [8, 0, 8, 0]], "c": [[0, 0, 4, 1]]}

    def prepare(self, layout, ids):
        return {image_id: image_id for image_id in ids if image_id in self.tables}

    def read_target(self, path):
        return np.asarray(self.tables[path], dtype=np.int64)


def test_annotation_used_sums_over_the_training_images():
    used = annotation_used(TwoTables(), layout=None, ids=["a", "b", "c"])
    assert used == {"format": "tiles", "images": 3, "labelled_images": 2, "tiles": 3, "positive_tiles": 2,
                    "tile_pixels": 64 + 64 + 16}


def test_the_report_names_the_annotation_in_its_unit():
    assert annotation_summary({"instances": 12, "pixels": 9}) == "12 instances"
    assert annotation_summary({"scribble_pixels": 25, "pixels": 1000}) == "2.5% px scribbled"
    assert annotation_summary({"tiles": 30, "positive_tiles": 20}) == "30 tiles (20 positive)"
    assert annotation_summary({"format": "none", "images": 6, "labelled_images": 0}) == "none"
    assert annotation_summary(None) == "–"
