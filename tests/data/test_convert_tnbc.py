"""TNBC: binary GT -> 8-connected instances, COIN split, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cellseg.data.convert.common import CountMismatchError, verify_manifest
from cellseg.data.convert.tnbc import binary_to_instances, convert_tnbc
from cellseg.utils.io import read_image, read_label


def _gt():
    gt = np.zeros((6, 7), np.uint8)
    gt[0:2, 0:2] = 255
    gt[2, 2] = 255  # touches the first blob diagonally: 8-connected, same nucleus
    gt[4:6, 4:7] = 255
    return gt


def _expected_label():
    label = np.zeros((6, 7), np.int32)
    label[0:2, 0:2] = 1
    label[2, 2] = 1
    label[4:6, 4:7] = 2
    return label


def test_binary_to_instances_uses_8_connectivity():
    np.testing.assert_array_equal(binary_to_instances(_gt()), _expected_label())


def _native_release(root, ids=("01_1", "01_2", "02_1")):
    rng = np.random.default_rng(0)
    for image_id in ids:
        slide = image_id.split("_")[0]
        for folder in (f"Slide_{slide}", f"GT_{slide}"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        rgba = np.dstack([rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), np.full((6, 7), 255, np.uint8)])
        Image.fromarray(rgba).save(root / f"Slide_{slide}" / f"{image_id}.png")
        Image.fromarray(_gt()).save(root / f"GT_{slide}" / f"{image_id}.png")


def test_convert_synthetic_release(tmp_path):
    _native_release(tmp_path / "native")
    out = convert_tnbc(tmp_path / "native", tmp_path / "out", check_counts=False)
    train = pd.read_csv(out / "train" / "index.csv", dtype={"id": str, "slide": str})
    test = pd.read_csv(out / "test" / "index.csv", dtype={"id": str, "slide": str})
    assert train[["id", "nuclei", "slide"]].values.tolist() == [["01_2", 2, "01"], ["02_1", 2, "02"]]
    assert test["id"].tolist() == ["01_1"]  # a COIN test id
    np.testing.assert_array_equal(read_label(out / "test/labels/01_1.png"), _expected_label())
    assert read_image(out / "test/images/01_1.png").shape == (6, 7, 3)
    assert verify_manifest(out) == []


def test_convert_checks_counts(tmp_path):
    _native_release(tmp_path / "native")
    with pytest.raises(CountMismatchError, match="split 'test' has 1 images, expected 10"):
        convert_tnbc(tmp_path / "native", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_non_binary_gt_is_rejected_naming_the_file(tmp_path):
    _native_release(tmp_path / "native")
    gt = _gt()
    gt[5, 0] = 128
    Image.fromarray(gt).save(tmp_path / "native/GT_02/02_1.png")
    with pytest.raises(ValueError, match=r"GT_02/02_1\.png: 3 distinct values .*expected a binary 0/255 mask"):
        convert_tnbc(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_gt_folder_or_file_and_wrong_folder(tmp_path):
    _native_release(tmp_path / "native")
    (tmp_path / "native/GT_01/01_2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no GT mask for images \[.*Slide_01/01_2\.png"):
        convert_tnbc(tmp_path / "native", tmp_path / "out", check_counts=False)
    Image.fromarray(_gt()).save(tmp_path / "native/GT_01/01_2.png")
    for path in (tmp_path / "native/GT_02").iterdir():
        path.unlink()
    (tmp_path / "native/GT_02").rmdir()
    with pytest.raises(FileNotFoundError, match=r"GT_02: missing ground-truth folder"):
        convert_tnbc(tmp_path / "native", tmp_path / "out", check_counts=False)
    with pytest.raises(FileNotFoundError, match="no Slide_XX folder"):
        convert_tnbc(tmp_path / "native" / "GT_01", tmp_path / "out")
