"""Stage 2b: IoU scores, per-image threshold, pseudo-label painting (A5)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from coin_synth import disk_label

from cellseg.methods.coin.prompter import PromptedMask
from cellseg.methods.coin.scoring import IGNORE, accepted_ids, instance_scores, paint_pseudo_label, threshold


def test_a_perfect_prompter_scores_every_instance_one():
    instances = disk_label((64, 64), [(15, 15, 6), (15, 40, 9), (45, 30, 12), (60, 60, 5)])
    prompted = [PromptedMask(i, instances == i, (0, 0)) for i in range(1, 5)]
    scores = instance_scores(instances, prompted)
    assert sorted(scores) == [1, 2, 3, 4]
    for value in scores.values():
        assert value == pytest.approx(1.0, abs=1e-6)


def test_iou_formula_with_crops_and_full_masks():
    instances = np.zeros((8, 8), int)
    instances[2:4, 2:4] = 7  # A: 4 px
    b = np.zeros((8, 8), bool)
    b[3:5, 2:5] = True  # B: 6 px, 2 px shared with A, union 8
    expected = 2 / (8 + 1e-5)
    assert instance_scores(instances, {7: b})[7] == pytest.approx(expected, rel=1e-12)
    crop = PromptedMask(7, b[3:5, 2:5], (3, 2))
    assert instance_scores(instances, [crop])[7] == pytest.approx(expected, rel=1e-12)
    far = PromptedMask(7, np.ones((2, 2), bool), (6, 6))  # no overlap
    assert instance_scores(instances, [far])[7] == 0.0
    with pytest.raises(ValueError, match="instance 7 has no prompted mask"):
        instance_scores(instances, {})


def test_threshold_strategies():
    scores = {1: 0.2, 2: 0.5, 3: 0.8, 4: 0.9}
    values = list(scores.values())
    assert threshold(scores, "mean") == pytest.approx(statistics.mean(values))
    assert threshold(scores, "mean+std") == pytest.approx(statistics.mean(values) + statistics.pstdev(values))
    assert threshold({1: 0.9, 2: 0.95, 3: 0.3}, "mean+std", cap=0.9) == 0.9  # mean + std = 0.976 capped
    assert threshold(scores, "mean+std", value=0.33) == 0.33  # a fixed value overrides
    assert threshold(scores, "fixed", value=0.5) == 0.5
    with pytest.raises(ValueError, match="needs a value"):
        threshold(scores, "fixed")
    with pytest.raises(ValueError, match="scoring.strategy"):
        threshold(scores, "median")


def test_an_image_without_instances_accepts_nothing():
    for strategy in ("mean", "mean+std"):
        theta = threshold({}, strategy)
        assert not math.isnan(theta) and accepted_ids({}, theta) == []
    label = paint_pseudo_label((4, 4), np.zeros((4, 4), int), [], {}, threshold({}))
    assert label.dtype == np.uint16 and not label.any()


def test_acceptance_is_strict_and_ordered_by_score():
    scores = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.6}
    assert accepted_ids(scores, 0.5) == [3, 4, 2]  # 0.5 itself rejected; ties by id


def test_paint_pseudo_label_layout():
    instances = np.zeros((6, 10), int)
    instances[1:4, 1:4] = 1  # accepted, score 0.9
    instances[1:4, 5:8] = 2  # accepted, score 0.6
    instances[4:6, 8:10] = 3  # rejected (score == theta): stays ignore
    b1 = np.zeros((6, 10), bool)
    b1[1:4, 1:6] = True  # extends over the background column 4 and into instance 2
    b2 = np.zeros((6, 10), bool)
    b2[0:4, 4:8] = True  # extends into the background; overlaps b1 on column 4-5
    b3 = np.zeros((6, 10), bool)
    b3[5, 0] = True
    scores = {1: 0.9, 2: 0.6, 3: 0.5}
    label = paint_pseudo_label((6, 10), instances, {1: b1, 2: b2, 3: b3}, scores, theta=0.5)
    expected = np.zeros((6, 10), np.uint16)
    expected[instances > 0] = IGNORE
    expected[b2] = 1  # lower score first: id 1
    expected[b1] = 2  # higher score painted last wins the overlap: id 2
    np.testing.assert_array_equal(label, expected)
    assert label.dtype == np.uint16 and label[5, 0] == 0 and label[5, 9] == IGNORE
    assert np.all(label[1:4, 4:6] == 2)


def test_paint_instance_mode_and_id_compaction():
    instances = np.zeros((5, 5), int)
    instances[0:2, 0:2] = 4
    instances[3:5, 3:5] = 9
    cover = np.zeros((5, 5), bool)
    cover[0:2, 0:2] = True
    scores = {4: 0.7, 9: 0.8}
    # prompted masks of both cover instance 4's pixels only: 4 (id 1) is painted over by 9 -> ids compact to 1
    label = paint_pseudo_label((5, 5), instances, {4: cover, 9: cover}, scores, theta=0.1)
    assert set(np.unique(label)) == {0, 1, IGNORE} and np.all(label[0:2, 0:2] == 1)
    label = paint_pseudo_label((5, 5), instances, {}, scores, theta=0.1, paint="instance")
    assert np.all(label[0:2, 0:2] == 1) and np.all(label[3:5, 3:5] == 2) and (label == 0).sum() == 17
    with pytest.raises(ValueError, match="scoring.paint"):
        paint_pseudo_label((5, 5), instances, {}, scores, 0.1, paint="union")
    with pytest.raises(ValueError, match="shape"):
        paint_pseudo_label((5, 6), instances, {}, scores, 0.1)
    with pytest.raises(ValueError, match="has no prompted mask"):
        paint_pseudo_label((5, 5), instances, {}, scores, 0.1)
