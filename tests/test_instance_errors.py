"""benchmarks/instance_errors.py: hand-built maps whose unmatched instances and stained shares are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from instance_errors import drop_pale_instances, hematoxylin_share, prediction_errors  # noqa: E402

# Optical densities of pure hematoxylin and pure eosin (skimage's stain vectors) turned into RGB.
HEMATOXYLIN_RGB = (255 * 10 ** -np.array([0.65, 0.70, 0.29])).astype(np.uint8)
EOSIN_RGB = (255 * 10 ** -np.array([0.07, 0.99, 0.11])).astype(np.uint8)


def two_nuclei_scene():
    """GT: nuclei 1 and 2. Prediction: 1 matches GT 1, 2 covers half of GT 2, 3 lies on background only."""
    gt = np.zeros((40, 40), np.int32)
    gt[2:12, 2:12] = 1
    gt[20:30, 2:12] = 2
    pred = np.zeros_like(gt)
    pred[2:12, 2:12] = 1
    pred[20:25, 2:12] = 2
    pred[30:38, 28:38] = 3
    image = np.broadcast_to(EOSIN_RGB, (40, 40, 3)).copy()
    image[gt > 0] = HEMATOXYLIN_RGB
    return image, gt, pred


def test_prediction_errors_give_each_instance_its_area_foreground_share_and_best_iou():
    _, gt, pred = two_nuclei_scene()
    errors = prediction_errors(gt, pred)
    np.testing.assert_array_equal(errors.area, [100, 50, 80])
    np.testing.assert_allclose(errors.on_gt_foreground, [1.0, 1.0, 0.0])
    np.testing.assert_allclose(errors.best_iou, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(errors.unmatched, [False, True, True])  # IoU 0.5 is not a match (> 0.5)


def test_hematoxylin_share_separates_instances_on_nuclei_from_those_on_eosin():
    image, _, pred = two_nuclei_scene()
    np.testing.assert_allclose(hematoxylin_share(image, pred), [1.0, 1.0, 0.0])
    kept = drop_pale_instances(image, pred, min_share=0.5)
    assert set(np.unique(kept)) == {0, 1, 2}
    np.testing.assert_array_equal(kept[pred != 3], pred[pred != 3])


def test_the_script_prints_one_row_per_filter_setting(tmp_path):
    image, gt, pred = two_nuclei_scene()
    for folder in ("images", "labels", "predictions"):
        (tmp_path / folder).mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(gt.astype(np.uint16)).save(tmp_path / "labels" / "a.png")
    Image.fromarray(pred.astype(np.uint16)).save(tmp_path / "predictions" / "a.png")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"gt_dir": str(tmp_path / "labels"),
                                                  "pred_dir": str(tmp_path / "predictions")}))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "instance_errors.py"
    out = subprocess.run([sys.executable, str(script), str(run), "--min-shares", "0.5"],
                         capture_output=True, text=True, check=True).stdout
    as_predicted, filtered = (line for line in out.splitlines() if "as predicted" in line or ">= 0.5" in line)
    assert [cell.strip() for cell in as_predicted.split("|")[3:6]] == ["3", "2", "0.500"]
    assert [cell.strip() for cell in filtered.split("|")[3:6]] == ["2", "1", "0.000"]
