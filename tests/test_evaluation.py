"""evaluate_predictions / evaluate_arrays on small real crops written to temporary folders."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from cellseg.evaluation import class_map_reason, evaluate_arrays, evaluate_predictions, format_table
from cellseg.metrics import CLEAN_METRICS, aggregate, image_stats, instance_metrics
from cellseg.utils.io import read_label, write_label, write_mask_uint8

CROP = 128


def shifted(label: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(label)
    out[dy:, dx:] = label[: label.shape[0] - dy, : label.shape[1] - dx]
    return out


@pytest.fixture(scope="module")
def pairs(shared_data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (gt, pred): crops of three MoNuSeg test images; predictions shifted and with objects dropped."""
    labels_dir = shared_data / "MoNuSeg" / "test" / "labels"
    if not labels_dir.is_dir():
        pytest.skip(f"MoNuSeg test labels {labels_dir} are absent")
    out = {}
    for k, path in enumerate(sorted(labels_dir.glob("*.png"))[:3]):
        gt = read_label(path)[200: 200 + CROP, 300: 300 + CROP]
        pred = shifted(gt, 1 + k, 2)
        pred[np.isin(pred, np.unique(pred)[1::5])] = 0
        out[f"img{k}"] = (gt, pred)
    return out


def write_folders(tmp_path, pairs, pred_suffix=None):
    gt_dir, pred_dir = tmp_path / "labels", tmp_path / "pred"
    for k, (image_id, (gt, pred)) in enumerate(pairs.items()):
        write_label(gt_dir / f"{image_id}.png", gt)
        suffix = pred_suffix or (".tif" if k == 1 else ".png")  # PNG and TIFF predictions mixed
        write_label(pred_dir / f"{image_id}{suffix}", pred)
    return gt_dir, pred_dir


def test_happy_path_writes_both_files_with_instance_metric_values(tmp_path, pairs):
    gt_dir, pred_dir = write_folders(tmp_path, pairs)
    out_dir = tmp_path / "out"
    result = evaluate_predictions(gt_dir, pred_dir, out_dir, progress=False)
    table = pd.read_csv(out_dir / "per_image.csv", dtype={"id": str}).set_index("id")
    assert list(table.index) == sorted(pairs)
    for image_id, (gt, pred) in pairs.items():
        expected = instance_metrics(gt, pred)
        for name in CLEAN_METRICS:
            assert table.loc[image_id, name] == pytest.approx(expected[name], abs=1e-12), (image_id, name)
            assert result.per_image.loc[image_id, name] == expected[name]
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert set(saved) == {"per_image_mean", "pooled", "n_undefined", "n_images", "gt_dir", "pred_dir"}
    assert saved["n_images"] == 3 and saved["gt_dir"] == str(gt_dir)
    summary = aggregate([image_stats(gt, pred) for gt, pred in pairs.values()])
    for name in CLEAN_METRICS:
        assert saved["per_image_mean"][name] == pytest.approx(summary[name], abs=1e-12)
        assert saved["pooled"][name] == pytest.approx(summary[f"{name}_pooled"], abs=1e-12)
        assert saved["n_undefined"][name] == 0
    assert 0 < saved["per_image_mean"]["aji"] < 1
    # the CSV keeps the sums, so pooled values can be recomputed from it
    rows = [row for _, row in table.iterrows()]
    assert aggregate(rows)["aji_pooled"] == pytest.approx(summary["aji_pooled"], abs=1e-12)
    text = format_table(result)
    assert "aji_plus" in text and f"{summary['pq']:.4f}" in text and "images: 3" in text


def test_all_folder_problems_in_one_error_and_nothing_written(tmp_path, pairs):
    gt_dir, pred_dir = write_folders(tmp_path, pairs, pred_suffix=".png")
    (pred_dir / "img2.png").unlink()  # missing
    write_label(pred_dir / "stray.png", pairs["img0"][1])  # extra
    write_label(pred_dir / "img1.png", pairs["img1"][1][:, :100])  # size mismatch
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        evaluate_predictions(gt_dir, pred_dir, out_dir, progress=False)
    message = str(info.value)
    assert "img2.png" in message and "missing" in message
    assert "stray.png" in message and "extra" in message
    assert "img1.png is 128x100" in message and "128x128" in message
    assert not out_dir.exists()


def test_duplicate_prediction_files_and_unknown_ids_are_reported(tmp_path, pairs):
    gt_dir, pred_dir = write_folders(tmp_path, pairs, pred_suffix=".png")
    write_label(pred_dir / "img0.tif", pairs["img0"][1])
    with pytest.raises(ValueError) as info:
        evaluate_predictions(gt_dir, pred_dir, None, ids=["img0", "nope"], progress=False)
    assert "img0.tif" in str(info.value) and "'nope'" in str(info.value)


def test_ids_select_images_and_ignore_masks_are_applied(tmp_path, pairs):
    gt_dir, pred_dir = write_folders(tmp_path, pairs)
    ignore = np.zeros((CROP, CROP), np.uint8)
    ignore[:, :40] = 1
    write_mask_uint8(gt_dir / "img0_ignore.png", ignore)
    result = evaluate_predictions(gt_dir, pred_dir, ids=["img0", "img1"], progress=False)
    assert list(result.per_image.index) == ["img0", "img1"]
    gt, pred = pairs["img0"]
    expected = instance_metrics(gt, pred, ignore_mask=ignore > 0)
    assert result.per_image.loc["img0", "aji"] == expected["aji"]
    assert expected["aji"] != instance_metrics(gt, pred)["aji"]
    no_ignore = evaluate_predictions(gt_dir, pred_dir, ids=["img0"], use_ignore=False, progress=False)
    assert no_ignore.per_image.loc["img0", "aji"] == instance_metrics(gt, pred)["aji"]


def test_evaluate_arrays_with_faithful_names_and_empty_images(pairs):
    empty = np.zeros((16, 16), np.int32)
    items = [(image_id, gt, pred) for image_id, (gt, pred) in pairs.items()] + [("blank", empty, empty)]
    names = ["aji", "pq", "s2l_mdice_faithful", "s2l_iou_faithful"]
    result = evaluate_arrays(items, names, progress=False)
    assert list(result.per_image.columns[:4]) == names
    assert math.isnan(result.per_image.loc["blank", "aji"])
    assert result.n_undefined == {"aji": 1, "pq": 1, "s2l_mdice_faithful": 0, "s2l_iou_faithful": 0}
    assert "s2l_mdice_faithful" not in result.pooled
    assert result.per_image.loc["blank", "s2l_iou_faithful"] == 1.0
    assert result.to_json()["per_image_mean"]["aji"] == pytest.approx(
        np.mean([instance_metrics(gt, pred)["aji"] for gt, pred in pairs.values()]))
    with pytest.raises(ValueError, match="appears twice"):
        evaluate_arrays(items + items[:1], progress=False)
    with pytest.raises(ValueError, match="image 'bad'"):
        evaluate_arrays([("bad", empty, empty[:4])], progress=False)


def test_all_undefined_metrics_are_null_in_json(tmp_path):
    empty = np.zeros((8, 8), np.int32)
    result = evaluate_arrays([("blank", empty, empty)], progress=False)
    assert result.to_json()["per_image_mean"]["aji"] is None
    assert result.to_json()["pooled"]["aji"] is None


# ----- predictions that are class maps, not instance maps ------------------------------------------------------------
def nuclei_gt(size: int = 64) -> np.ndarray:
    """Twelve 6 x 6 nuclei on a 4 x 3 grid, ids 1..12."""
    gt = np.zeros((size, size), np.int32)
    for k in range(12):
        top, left = 4 + (k // 3) * 15, 4 + (k % 3) * 20
        gt[top: top + 6, left: left + 6] = k + 1
    return gt


def write_class_map_case(tmp_path) -> tuple:
    """GT folder of three images and predictions: binary 0/255, semantic 0/1/2, a real instance map."""
    gt_dir, pred_dir = tmp_path / "labels", tmp_path / "pred"
    gt = nuclei_gt()
    ragged = gt.copy()
    ragged[gt == 5] = 0
    ragged[4:7, 27:30] = ragged[8:10, 28:30] = 5  # instance 5 in two separate pieces
    for image_id in ("binary", "semantic", "instances"):
        write_label(gt_dir / f"{image_id}.png", gt)
    write_label(pred_dir / "binary.png", (gt > 0) * 255)
    write_label(pred_dir / "semantic.tif", np.where(gt > 0, 1 + (gt > 6), 0))
    write_label(pred_dir / "instances.png", ragged)
    return gt_dir, pred_dir, gt, ragged


def test_class_map_rule_flags_binary_and_semantic_maps_but_not_ragged_or_empty_instance_maps():
    gt = nuclei_gt()
    assert class_map_reason((gt > 0).astype(np.int32) * 255) == "1 nonzero value (255 in 12 separate regions)"
    assert class_map_reason(np.where(gt > 0, 1 + (gt > 6), 0)).startswith("2 nonzero values (1 in 6 separate")
    assert class_map_reason(gt) is None and class_map_reason(np.zeros((8, 8), np.int32)) is None
    few = np.zeros_like(gt)  # a sparse instance map: two nuclei, one of them in four pieces, still passes
    few[gt == 1], few[gt == 2], few[gt == 3], few[gt == 4], few[gt == 5] = 1, 1, 1, 1, 2
    assert class_map_reason(few) is None
    assert class_map_reason(np.where(np.isin(gt, [1, 2, 3, 4, 5]), 1, 0)) is not None  # five pieces: binary


def test_binary_and_semantic_predictions_are_refused_together_before_anything_is_written(tmp_path):
    gt_dir, pred_dir, _, _ = write_class_map_case(tmp_path)
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        evaluate_predictions(gt_dir, pred_dir, out_dir, progress=False)
    message = str(info.value)
    assert "2 predictions" in message and "binary or semantic class maps" in message
    assert "binary.png: 1 nonzero value (255 in 12 separate regions)" in message
    assert "semantic.tif: 2 nonzero values" in message and "instances.png" not in message
    assert "allow_class_maps=true" in message
    assert not out_dir.exists()


def test_a_real_instance_map_with_a_two_piece_instance_is_scored(tmp_path):
    gt_dir, pred_dir, gt, ragged = write_class_map_case(tmp_path)
    result = evaluate_predictions(gt_dir, pred_dir, ids=["instances"], progress=False)
    assert result.per_image.loc["instances", "aji"] == instance_metrics(gt, ragged)["aji"]


def test_allow_class_maps_scores_them_with_a_warning(tmp_path, caplog):
    gt_dir, pred_dir, gt, _ = write_class_map_case(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cellseg.evaluation"):
        result = evaluate_predictions(gt_dir, pred_dir, tmp_path / "out", progress=False, allow_class_maps=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "binary.png" in warnings[0] and "semantic.tif" in warnings[0]
    assert result.per_image.loc["binary", "aji"] == instance_metrics(gt, (gt > 0) * 255)["aji"] < 0.2
    assert (tmp_path / "out" / "metrics.json").is_file()
