"""Cyclic self-training (docs/methods/cyclic.md#self-training): ordered merging without duplicates, confident detections, the next pseudo set,
set change and the stopping rule, on hand-built rectangles."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg.data.weak.pseudo_instances import merge_ordered_instances
from cellseg.methods.cyclic.self_training import (
    next_pseudo_set,
    set_change,
    should_stop,
)
from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

SHAPE = (30, 40)


def rect(top: int, left: int, rows: int, cols: int, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + rows, left : left + cols] = True
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_merge_never_adds_a_duplicate_of_a_member():
    a = rect(5, 5, 10, 12)  # 120 px
    b = rect(5, 9, 10, 12)  # shifted by 4: IoU 80 / 160 = 0.5 exactly, a duplicate
    c = rect(5, 11, 10, 12)  # shifted by 6: IoU 60 / 180 < 0.5 with a, but 100 / 140 >= 0.5 with b
    assert iou(a, b) == 0.5 and iou(a, c) < 0.5 <= iou(b, c)
    merged = merge_ordered_instances([a, b, c], SHAPE, dedup_iou=0.5, min_area=10)
    assert merged.dtype == np.uint16 and set(np.unique(merged)) == {0, 1, 2}
    assert np.array_equal(merged == 1, a)
    assert np.array_equal(merged == 2, c & ~a)  # c enters (b never became a member) with its unowned pixels
    # with a looser threshold b enters too, and c is then a duplicate of b
    loose = merge_ordered_instances([a, b, c], SHAPE, dedup_iou=0.6, min_area=10)
    assert np.array_equal(loose == 2, b & ~a) and int(loose.max()) == 2


def test_merge_keeps_owned_pixels_and_drops_small_remainders():
    a = rect(5, 5, 10, 10)
    c = rect(5, 11, 10, 10)  # IoU 40 / 160: enters with 60 px not owned by a
    merged = merge_ordered_instances([a, c], SHAPE, dedup_iou=0.5, min_area=60)
    assert np.array_equal(merged == 1, a) and np.array_equal(merged == 2, c & ~a)
    assert (merged[a & c] == 1).all()  # overlap stays with the earlier member
    assert int((merged == 2).sum()) == 60
    dropped = merge_ordered_instances([a, c], SHAPE, dedup_iou=0.5, min_area=61)
    assert set(np.unique(dropped)) == {0, 1}
    # order is priority: c first now owns the overlap
    swapped = merge_ordered_instances([c, a], SHAPE, dedup_iou=0.5, min_area=10)
    assert np.array_equal(swapped == 1, c) and np.array_equal(swapped == 2, a & ~c)


def test_merge_edge_cases():
    assert not merge_ordered_instances([], SHAPE).any()
    assert not merge_ordered_instances([np.zeros(SHAPE, dtype=bool)], SHAPE, min_area=0).any()
    with pytest.raises(ValueError, match="expected"):
        merge_ordered_instances([rect(0, 0, 2, 2, shape=(5, 5))], SHAPE)
    with pytest.raises(ValueError, match="dedup_iou"):
        merge_ordered_instances([], SHAPE, dedup_iou=0.0)


def test_next_pseudo_set_detections_first_and_ignore_cleared_where_covered():
    relevance = np.zeros(SHAPE, dtype=np.uint16)
    relevance[rect(5, 5, 8, 8)] = 1
    relevance[rect(5, 25, 8, 8)] = 2
    relevance[rect(20, 5, 6, 30)] = IGNORE
    duplicate_of_1 = rect(5, 6, 8, 8)  # IoU 56 / 72 with relevance instance 1
    over_ignore = rect(18, 10, 6, 6)  # on background and ignore
    pseudo = next_pseudo_set([duplicate_of_1, over_ignore], relevance, dedup_iou=0.5, min_area=10)
    assert np.array_equal(pseudo == 1, duplicate_of_1)
    assert np.array_equal(pseudo == 2, over_ignore)
    assert np.array_equal(pseudo == 3, relevance == 2)  # relevance instance 1 is a duplicate: not added
    assert np.array_equal(pseudo == IGNORE, (relevance == IGNORE) & ~over_ignore)
    assert not (pseudo[rect(5, 5, 8, 1)] > 0).any()  # the dropped duplicate's leftover column is background

    # a detection too small to stay keeps no pixel, so the ignore under it stays
    small = rect(22, 30, 2, 2)
    kept_ignore = next_pseudo_set([small], relevance, min_area=10)
    assert (kept_ignore[small] == IGNORE).all()
    assert np.array_equal(next_pseudo_set([], relevance, min_area=10), relevance)


def test_set_change_identical_disjoint_and_pooled():
    one = np.zeros(SHAPE, dtype=np.uint16)
    one[rect(2, 2, 6, 6)] = 1
    one[rect(2, 20, 6, 6)] = 2
    one[rect(20, 2, 5, 30)] = IGNORE
    assert set_change(one, one) == 0.0
    disjoint = np.zeros(SHAPE, dtype=np.uint16)
    disjoint[rect(12, 2, 6, 6)] = 1
    disjoint[rect(20, 2, 5, 30)] = IGNORE  # shared ignore is no instance
    assert set_change(one, disjoint) == 1.0
    # pooled: 2 matched of 2 + 2 in the first image, 0 of 2 + 1 in the second -> F1 = 2 * 2 / 7
    shifted = one.copy()
    shifted[rect(2, 20, 6, 6)] = 0
    shifted[rect(2, 21, 6, 6)] = 2  # IoU 30 / 42 > 0.5: still a match
    assert set_change([one, one], [shifted, disjoint]) == pytest.approx(1 - 4 / 7)
    empty = np.zeros(SHAPE, dtype=np.uint16)
    assert set_change([empty], [empty]) == 0.0 and set_change(one, empty) == 1.0
    with pytest.raises(ValueError, match="iou"):
        set_change(one, one, iou=0.3)


def test_stopping_rule():
    assert should_stop(2, 0.0) and should_stop(3, 0.019)
    assert not should_stop(1, 0.0)  # loop 1 has no previous set
    assert not should_stop(2, 0.02) and not should_stop(2, 0.5) and not should_stop(2, None)
    assert should_stop(2, 0.04, eps=0.05)
    one = np.zeros(SHAPE, dtype=np.uint16)
    one[rect(2, 2, 6, 6)] = 1
    assert should_stop(2, set_change(one, one.copy()))  # an unchanged set stops the loop
