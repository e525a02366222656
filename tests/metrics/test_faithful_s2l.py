"""Faithful S2L metrics: one hand-made case per quirk, and agreement with a literal per-label loop."""

from __future__ import annotations

import numpy as np
import pytest
from label_perturbations import perturbed_cases

from cellseg.metrics import image_stats, instance_metrics, s2l_iou_faithful, s2l_mdice_faithful
from cellseg.metrics.reference import reference_s2l_mdice_faithful

EPS = 1e-4
SIZE = 30
INNER = (slice(10, 15), slice(10, 15))  # 25 px, touches no border
INNER_2 = (slice(20, 25), slice(3, 8))  # 25 px, touches no border
BORDER = (slice(0, 5), slice(20, 25))  # 25 px on the top row
BORDER_POOR_PRED = (slice(0, 5), slice(20, 22))  # 10 px inside BORDER
POOR_DICE = (2 * 10 + EPS) / (25 + 10 + EPS)
MISSED_INTERIOR = EPS / (25 + EPS)


def paint(*objects: tuple[tuple[slice, slice], int]) -> np.ndarray:
    label = np.zeros((SIZE, SIZE), np.int32)
    for region, object_id in objects:
        label[region] = object_id
    return label


def test_perfect_and_partial_overlap_use_the_eps_formula():
    gt = paint((INNER, 1))
    assert s2l_mdice_faithful(gt, paint((INNER, 7))) == pytest.approx(1.0, abs=1e-12)
    partial = paint(((slice(10, 15), slice(10, 14)), 7))  # 20 of 25 px
    assert s2l_mdice_faithful(gt, partial) == pytest.approx((40 + EPS) / (45 + EPS), abs=1e-12)


def test_missed_interior_object_scores_eps_over_area_not_zero():
    score = s2l_mdice_faithful(paint((INNER, 1)), np.zeros((SIZE, SIZE), np.int32))
    assert score == pytest.approx(MISSED_INTERIOR, rel=1e-9)
    assert score > 0


def test_ids_of_255_or_more_saturate_and_empty_the_loop():
    pred = paint((INNER, 1), (INNER_2, 2))
    partial = paint(((slice(10, 15), slice(10, 14)), 1), (INNER_2, 2))
    d1 = (40 + EPS) / (45 + EPS)
    # ids 1 and 254: labels 2..253 are absent (score 1), 254 is perfect
    assert s2l_mdice_faithful(paint((INNER, 1), (INNER_2, 254)), partial) == pytest.approx((d1 + 253) / 254)
    for big_id in (255, 256, 300, 40000):  # all become 255: range(1, uint8(255) + 1) is empty
        gt = paint((INNER, 1), (INNER_2, big_id))
        assert s2l_mdice_faithful(gt, pred) == 0.0, big_id
        assert instance_metrics(gt, pred)["s2l_mdice"] == 1.0  # the clean variant is unaffected


def test_absent_labels_score_one():
    partial = paint(((slice(10, 15), slice(10, 14)), 5), (INNER_2, 6))
    d1 = (40 + EPS) / (45 + EPS)
    assert s2l_mdice_faithful(paint((INNER, 1), (INNER_2, 3)), partial) == pytest.approx((d1 + 1 + 1) / 3)


def test_objects_below_20_px_score_one():
    missed_19 = paint(((slice(10, 11), slice(5, 24)), 1))  # 19 px, interior
    missed_20 = paint(((slice(10, 11), slice(5, 25)), 1))  # 20 px
    empty = np.zeros((SIZE, SIZE), np.int32)
    assert s2l_mdice_faithful(missed_19, empty) == 1.0
    assert instance_metrics(missed_19, empty)["s2l_mdice"] == 0.0
    assert s2l_mdice_faithful(missed_20, empty) == pytest.approx(EPS / (20 + EPS), rel=1e-9)


def test_a_missed_object_deletes_later_border_objects():
    pred = paint((BORDER_POOR_PRED, 9))
    # interior object missed first: the border object (later id) is deleted and scores 1
    missed_first = s2l_mdice_faithful(paint((INNER, 1), (BORDER, 2)), pred)
    assert missed_first == pytest.approx((MISSED_INTERIOR + 1.0) / 2)
    # border object first: scored normally before anything is deleted, then the interior one is missed
    border_first = s2l_mdice_faithful(paint((BORDER, 1), (INNER, 2)), pred)
    assert border_first == pytest.approx((POOR_DICE + MISSED_INTERIOR) / 2)


def test_a_missed_border_object_deletes_itself_and_scores_one():
    gt = paint((BORDER, 1))
    empty = np.zeros((SIZE, SIZE), np.int32)
    assert s2l_mdice_faithful(gt, empty) == 1.0
    assert instance_metrics(gt, empty)["s2l_mdice"] == 0.0


def test_small_or_absent_objects_also_trigger_the_deletion():
    pred = paint((BORDER_POOR_PRED, 9))
    assert s2l_mdice_faithful(paint((BORDER, 1)), pred) == pytest.approx(POOR_DICE)
    small = (slice(12, 14), slice(12, 17))  # 10 px
    assert s2l_mdice_faithful(paint((small, 1), (BORDER, 2)), pred) == 1.0
    assert s2l_mdice_faithful(paint((BORDER, 2)), pred) == 1.0  # label 1 absent


def test_interior_objects_survive_the_deletion():
    pred = paint(((slice(10, 15), slice(10, 14)), 4))
    d = (40 + EPS) / (45 + EPS)
    assert s2l_mdice_faithful(paint((INNER, 2)), pred) == pytest.approx((1.0 + d) / 2)


def test_ties_take_the_lowest_prediction_id():
    gt = paint((INNER, 1))
    pred = paint(((slice(10, 15), slice(10, 12)), 4), ((slice(20, 24), slice(20, 25)), 4),
                 ((slice(10, 15), slice(13, 15)), 9))  # 10 px inside each; pred 4 has 30 px, pred 9 has 10
    assert s2l_mdice_faithful(gt, pred) == pytest.approx((20 + EPS) / (25 + 30 + EPS))


def test_empty_gt_scores_zero():
    assert s2l_mdice_faithful(np.zeros((5, 5), int), np.ones((5, 5), int)) == 0.0


def test_s2l_iou_faithful():
    a = paint((INNER, 1))
    b = paint(((slice(10, 15), slice(10, 14)), 3), (INNER_2, 4))
    assert s2l_iou_faithful(a, b) == pytest.approx((20 + 1e-6) / (50 + 1e-6), abs=1e-12)
    empty = np.zeros((SIZE, SIZE), np.int32)
    assert s2l_iou_faithful(empty, empty) == 1.0
    assert s2l_iou_faithful(a, empty) == pytest.approx(1e-6 / (25 + 1e-6), rel=1e-9)


def test_image_stats_carry_faithful_values_on_request():
    gt, pred = paint((INNER, 1), (BORDER, 2)), paint((BORDER_POOR_PRED, 9))
    assert "s2l_mdice_faithful" not in instance_metrics(gt, pred)
    values = image_stats(gt, pred, faithful=True).values
    assert values["s2l_mdice_faithful"] == pytest.approx((MISSED_INTERIOR + 1.0) / 2)
    assert values["s2l_iou_faithful"] == pytest.approx(s2l_iou_faithful(gt, pred), abs=1e-15)


def contiguous(label: np.ndarray, step: int = 1) -> np.ndarray:
    ids = np.unique(label)
    return (np.searchsorted(ids, label) * step).astype(np.int32)  # 0 stays 0 (background is ids[0])


def test_agrees_with_a_literal_per_label_loop(monuseg_crops):
    checked = 0
    for k, crop in enumerate(monuseg_crops):
        for step in (1, 2):  # step 2 leaves every other label absent
            gt = contiguous(crop, step)
            for _, _, pred in perturbed_cases(gt, seed=10 + k)[:9]:
                expected = reference_s2l_mdice_faithful(gt, pred)
                assert s2l_mdice_faithful(gt, pred) == pytest.approx(expected, abs=1e-12)
                checked += expected not in (0.0, 1.0)
    assert checked > 20
    assert s2l_mdice_faithful(monuseg_crops[0], monuseg_crops[0]) == reference_s2l_mdice_faithful(
        monuseg_crops[0], monuseg_crops[0])  # raw crop ids exceed 255: both give 0
