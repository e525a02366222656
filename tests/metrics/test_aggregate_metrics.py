"""Per-image means, undefined counts and pooled values (docs/metrics.md#aggregation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from label_perturbations import perturbed_cases

from cellseg.metrics import CLEAN_METRICS, aggregate, image_stats, instance_metrics, split_summary
from cellseg.metrics.reference import reference_metrics


def offset_ids(label: np.ndarray, offset: int) -> np.ndarray:
    return np.where(label > 0, label.astype(np.int64) + offset, 0)


@pytest.fixture(scope="module")
def image_pairs(monuseg_crops):
    """Three (gt, pred) pairs with different kinds of errors, ids disjoint across images."""
    pairs = []
    for k, crop in enumerate(monuseg_crops):
        _, gt, pred = perturbed_cases(crop, seed=20 + k)[(8, 5, 3)[k]]  # combo, shifted, merged
        pairs.append((offset_ids(gt, 10**5 * k), offset_ids(pred, 10**5 * k)))
    return pairs


def test_pooled_equals_the_metrics_of_the_images_side_by_side(image_pairs):
    """Pooling sums the tables: the same as evaluating one mosaic of the images (no overlap across them)."""
    summary = aggregate([image_stats(gt, pred) for gt, pred in image_pairs])
    mosaic_gt = np.hstack([gt for gt, _ in image_pairs])
    mosaic_pred = np.hstack([pred for _, pred in image_pairs])
    mosaic = reference_metrics(mosaic_gt, mosaic_pred)
    for name in CLEAN_METRICS:
        assert summary[f"{name}_pooled"] == pytest.approx(mosaic[name], abs=1e-9), name


def test_per_image_mean_skips_undefined_images_and_counts_them(image_pairs):
    empty = np.zeros((8, 8), np.int32)
    only_pred = empty.copy()
    only_pred[2:4, 2:4] = 3
    stats = [image_stats(gt, pred) for gt, pred in image_pairs]
    stats += [image_stats(empty, empty), image_stats(empty, only_pred)]
    summary = aggregate(stats)
    assert summary["n_images"] == 5
    values = [instance_metrics(gt, pred) for gt, pred in image_pairs]
    for name in ("aji", "aji_plus", "pq", "f1_obj", "dice", "iou_fg"):
        # the empty/empty image is excluded, the one-sided one counts as 0
        assert summary[name] == pytest.approx(sum(v[name] for v in values) / 4), name
        assert summary[f"{name}_n_undefined"] == 1
    # s2l_mdice is undefined whenever GT is empty
    assert summary["s2l_mdice_n_undefined"] == 2
    assert summary["s2l_mdice"] == pytest.approx(np.mean([v["s2l_mdice"] for v in values]))
    assert summary["miou_bin_n_undefined"] == 0


def test_pooled_is_nan_only_when_no_image_has_an_object():
    empty = np.zeros((4, 4), np.int32)
    summary = aggregate([image_stats(empty, empty), image_stats(empty, empty)])
    assert math.isnan(summary["aji"]) and math.isnan(summary["aji_pooled"])
    assert summary["aji_n_undefined"] == 2
    one = empty.copy()
    one[1, 1] = 1
    summary = aggregate([image_stats(empty, empty), image_stats(one, empty)])
    assert summary["aji_pooled"] == 0.0 and summary["aji"] == 0.0


def test_rows_and_stats_give_the_same_summary(image_pairs):
    stats = [image_stats(gt, pred, faithful=True) for gt, pred in image_pairs]
    names = (*CLEAN_METRICS, "s2l_mdice_faithful", "s2l_iou_faithful")
    from_stats = aggregate(stats, names)
    from_rows = aggregate([s.to_row() for s in stats], names)
    assert from_rows == from_stats
    assert "s2l_mdice_faithful_pooled" not in from_stats  # the faithful variants keep their own (mean) rule
    assert from_stats["s2l_iou_faithful"] == pytest.approx(np.mean([s.values["s2l_iou_faithful"] for s in stats]))
    split = split_summary(from_stats, names)
    assert split["pooled"]["aji"] == from_stats["aji_pooled"]
    assert split["n_undefined"]["dice"] == 0


def test_bad_rows_and_names_raise():
    row = image_stats(np.ones((2, 2), int), np.ones((2, 2), int)).to_row()
    del row["tp_px"]
    with pytest.raises(ValueError, match="tp_px"):
        aggregate([row])
    with pytest.raises(ValueError, match="unknown metric names"):
        aggregate([], names=["aji", "hausdorff"])
    with pytest.raises(ValueError, match="s2l_mdice_faithful"):
        aggregate([image_stats(np.ones((2, 2), int), np.ones((2, 2), int))], names=["s2l_mdice_faithful"])
