"""Fast table-based metrics against the slow per-instance-mask reference, and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from label_perturbations import perturbed_cases

from cellseg.metrics import CLEAN_METRICS, image_stats, instance_metrics
from cellseg.metrics import instance as instance_module
from cellseg.metrics import table as table_module
from cellseg.metrics.reference import reference_metrics


def assert_metrics_close(fast: dict, reference: dict, tol: float = 1e-6, context: str = "") -> None:
    for name in CLEAN_METRICS:
        a, b = fast[name], reference[name]
        if math.isnan(b):
            assert math.isnan(a), f"{context} {name}: fast {a}, reference NaN"
        else:
            assert abs(a - b) <= tol, f"{context} {name}: fast {a}, reference {b}"


@pytest.fixture(scope="module")
def real_cases(monuseg_crops):
    return [(f"crop{k}-{name}", gt, pred) for k, crop in enumerate(monuseg_crops)
            for name, gt, pred in perturbed_cases(crop, seed=k)]


def test_agrees_with_per_instance_reference_on_real_crops(real_cases):
    for name, gt, pred in real_cases:
        assert_metrics_close(instance_metrics(gt, pred), reference_metrics(gt, pred), context=name)


def test_cases_are_not_trivial(real_cases):
    """The perturbations must actually produce errors of every kind, else the agreement test proves little."""
    values = {name: instance_metrics(gt, pred) for name, gt, pred in real_cases}
    assert values["crop0-identical"]["aji"] == pytest.approx(1.0)
    for kind in ("eroded", "dilated", "merged", "split", "shifted", "dropped", "spurious", "combo"):
        assert values[f"crop0-{kind}"]["aji"] < 0.999, kind
    assert values["crop0-merged"]["aji"] != pytest.approx(values["crop0-merged"]["aji_plus"])


def test_sparse_table_and_component_matching_agree(real_cases, monkeypatch):
    """Force the sparse table (np.unique on pair keys) and per-component Hungarian: same values."""
    expected = {name: instance_metrics(gt, pred) for name, gt, pred in real_cases}
    monkeypatch.setattr(table_module, "DENSE_MAX_CELLS", 0)
    monkeypatch.setattr(instance_module, "DENSE_MATCH_MAX_CELLS", 0)
    for name, gt, pred in real_cases:
        assert_metrics_close(instance_metrics(gt, pred), expected[name], tol=1e-12, context=name)


def test_large_ids_take_the_unique_path(monkeypatch):
    gt = np.array([[0, 2**30, 2**30], [0, 5, 5]], dtype=np.int64)
    calls = []
    original = np.unique

    def counting_unique(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(table_module.np, "unique", counting_unique)
    table = table_module.contingency_table(gt, gt)
    assert calls, "ids above 2**24 must use np.unique"
    assert table.gt_ids.tolist() == [5, 2**30]
    assert table.gt_area.tolist() == [2, 2]


def test_table_matches_a_crosstab(monuseg_crops):
    import pandas as pd

    gt = monuseg_crops[0]
    pred = perturbed_cases(gt, seed=3)[8][2]  # combo
    table = table_module.contingency_table(gt, pred)
    cross = pd.crosstab(gt.ravel(), pred.ravel())
    assert table.gt_ids.tolist() == [i for i in cross.index if i != 0]
    assert table.pred_ids.tolist() == [j for j in cross.columns if j != 0]
    assert table.gt_area.tolist() == cross.loc[table.gt_ids].sum(axis=1).tolist()
    assert table.pred_area.tolist() == cross[table.pred_ids].sum(axis=0).tolist()
    cells = {(int(table.gt_ids[r]), int(table.pred_ids[c])): int(n)
             for r, c, n in zip(table.rows, table.cols, table.inter, strict=True)}
    expected = {(i, j): int(cross.loc[i, j]) for i in table.gt_ids for j in table.pred_ids if cross.loc[i, j] > 0}
    assert cells == expected
    assert table.bg == cross.loc[0, 0]
    assert table.n_px == gt.size


def row(values) -> np.ndarray:
    return np.array([values])


def test_aji_tie_takes_the_lowest_prediction_id():
    """GT 1 overlaps predictions 3 and 5 with identical I and U; GT 2 overlaps only 5."""
    gt = row([1, 1, 1, 1, 2, 2, 2, 0, 0, 0])
    pred = row([3, 3, 5, 5, 5, 5, 0, 0, 3, 3])
    m = instance_metrics(gt, pred)
    # GT1 takes pred 3 (I 2, U 6), GT2 takes pred 5 (I 2, U 5): no prediction left unused
    assert m["aji"] == pytest.approx(4 / 11, abs=1e-12)
    # swap the ids: now the tie goes to the pred at columns 2-5, so the other pred (area 4) is unused
    m_swapped = instance_metrics(gt, np.where(pred == 3, 5, np.where(pred == 5, 3, pred)))
    assert m_swapped["aji"] == pytest.approx(4 / 15, abs=1e-12)
    # Hungarian pairs (1,3) and (2,5): IoU 1/3 + 2/5 beats (1,5) alone
    assert m["aji_plus"] == pytest.approx(4 / 11, abs=1e-12)
    assert m["pq"] == 0.0 and m["dq"] == 0.0 and m["sq"] == 0.0
    assert m["precision_obj"] == 0.0 and m["recall_obj"] == 0.0
    assert m["dice"] == pytest.approx(12 / 15)
    assert m["iou_fg"] == pytest.approx(6 / 9)
    assert m["miou_bin"] == pytest.approx((6 / 9 + 1 / 4) / 2)
    # mDice: GT1 ties (2 px each) -> pred 3: 2*2/(4+4); GT2 -> pred 5: 2*2/(3+4)
    assert m["s2l_mdice"] == pytest.approx((0.5 + 4 / 7) / 2)


def test_mdice_tie_takes_the_lowest_id_even_if_worse():
    gt = row([1, 1, 1, 1, 0, 0, 0])
    pred = row([4, 4, 9, 9, 4, 4, 4])  # pred 4 has area 5, pred 9 area 2: same 2 px inside GT
    assert instance_metrics(gt, pred)["s2l_mdice"] == pytest.approx(4 / 9)


def test_pq_match_is_strictly_above_half():
    gt = row([1, 1, 1, 1, 0])
    half = instance_metrics(gt, row([0, 0, 7, 7, 0]))  # IoU exactly 2/4
    assert half["dq"] == 0.0 and half["pq"] == 0.0 and half["f1_obj"] == 0.0
    above = instance_metrics(gt, row([0, 7, 7, 7, 0]))  # IoU 3/4
    assert above["dq"] == 1.0 and above["f1_obj"] == 1.0
    assert above["sq"] == pytest.approx((3 / (4 + 1e-6)) / (1 + 1e-6), abs=1e-12)  # both HoVer-Net epsilons
    assert above["pq"] == pytest.approx(above["sq"], abs=1e-12)


def test_pq_counts_with_a_merge_and_a_spurious_object():
    gt = row([1, 1, 1, 0, 2, 2, 2, 0, 0, 0, 3, 3])
    pred = row([5, 5, 5, 0, 6, 6, 6, 6, 0, 8, 8, 0])  # 1 exact, 2 over-grown (3/4), 3 half (1/3), 8 spurious-ish
    stats = image_stats(gt, pred)
    assert (stats.tp_o, stats.fp_o, stats.fn_o) == (2, 1, 1)
    assert stats.values["dq"] == pytest.approx(2 / 3)
    assert stats.values["precision_obj"] == pytest.approx(2 / 3)
    assert stats.values["recall_obj"] == pytest.approx(2 / 3)
    assert stats.sum_iou == pytest.approx(3 / (3 + 1e-6) + 3 / (4 + 1e-6))


@pytest.mark.parametrize("gt_empty, pred_empty", [(True, False), (False, True)])
def test_one_side_empty_gives_zero(gt_empty, pred_empty):
    objects = np.zeros((6, 6), np.int32)
    objects[1:3, 1:4] = 4
    objects[4:6, 0:2] = 9
    gt = np.zeros_like(objects) if gt_empty else objects
    pred = np.zeros_like(objects) if pred_empty else objects
    m = instance_metrics(gt, pred)
    for name in ("aji", "aji_plus", "pq", "dq", "sq", "f1_obj", "precision_obj", "recall_obj", "dice", "iou_fg"):
        assert m[name] == 0.0, name
    assert m["miou_bin"] == pytest.approx(0.5 * (26 / 36))  # IoU_fg 0, IoU_bg = 26 bg pixels / 36
    if gt_empty:
        assert math.isnan(m["s2l_mdice"])
    else:
        assert m["s2l_mdice"] == 0.0


def test_both_empty_is_undefined():
    m = instance_metrics(np.zeros((4, 5), np.uint16), np.zeros((4, 5), np.int64))
    for name in CLEAN_METRICS:
        if name == "miou_bin":
            assert m[name] == 1.0  # only IoU_bg is defined: all 20 pixels agree on background
        else:
            assert math.isnan(m[name]), name


def test_map_without_background_pixels():
    gt = np.ones((4, 4), np.int32)
    pred = np.repeat(np.array([[1, 1, 2, 2]]), 4, axis=0)
    m = instance_metrics(gt, pred)
    # IoU 8/16 with both halves: pred 1 chosen, pred 2 (8 px) unused -> 8 / (16 + 8)
    assert m["aji"] == pytest.approx(1 / 3)
    assert m["miou_bin"] == 1.0  # IoU_fg = 1, IoU_bg undefined (no background anywhere)
    assert image_stats(gt, pred).bg_px == 0


def test_ignore_mask_removes_pixels_from_both_maps(monuseg_crops):
    gt = monuseg_crops[1]
    pred = perturbed_cases(gt, seed=5)[8][2]
    ignore = np.zeros(gt.shape, bool)
    ignore[:, :100] = True
    masked = instance_metrics(gt, pred, ignore_mask=ignore)
    assert_metrics_close(masked, reference_metrics(gt[:, 100:], pred[:, 100:]), tol=1e-9)
    assert image_stats(gt, pred, ignore).n_px == gt.shape[0] * (gt.shape[1] - 100)


def test_fully_ignored_image_is_undefined():
    gt = np.ones((3, 3), np.int32)
    m = instance_metrics(gt, gt, ignore_mask=np.ones((3, 3), bool))
    assert all(math.isnan(m[name]) for name in CLEAN_METRICS)


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(ValueError, match="shape"):
        instance_metrics(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="dtype float"):
        instance_metrics(np.zeros((3, 3), float), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="negative"):
        instance_metrics(np.full((3, 3), -1), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="ignore mask"):
        instance_metrics(np.zeros((3, 3), int), np.zeros((3, 3), int), ignore_mask=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="match_iou"):
        instance_metrics(np.zeros((3, 3), int), np.zeros((3, 3), int), match_iou=0.3)
