"""PanNuke: fold .npy arrays -> class-agnostic instance maps, classes, tissue, fold split, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellseg.data.convert.common import verify_manifest
from cellseg.data.convert.pannuke import convert_pannuke, pannuke_instance_map
from cellseg.utils.io import read_image, read_label


def _masks(empty=False):
    masks = np.zeros((6, 7, 6), np.float64)
    masks[..., 5] = 1
    if not empty:
        masks[0:2, 0:2, 0] = 1  # neoplastic id 1
        masks[3:5, 0:2, 0] = 4  # neoplastic id 4
        masks[0:2, 4:7, 2] = 1  # connective id 1: collides with channel 0's id 1
        masks[..., 5] = (masks[..., :5].sum(axis=2) == 0)
    return masks


def _expected_label():
    label = np.zeros((6, 7), np.int32)
    label[0:2, 0:2], label[3:5, 0:2], label[0:2, 4:7] = 1, 2, 3
    return label


def test_instance_map_renumbers_colliding_ids_across_channels():
    label, classes, overlap = pannuke_instance_map(_masks())
    np.testing.assert_array_equal(label, _expected_label())
    assert classes == {1: "neoplastic", 2: "neoplastic", 3: "connective"} and overlap == 0
    with pytest.raises(ValueError, match=r"m\[3\]: mask has shape \(6, 7, 5\)"):
        pannuke_instance_map(np.zeros((6, 7, 5)), "m[3]")


def _native_release(root, n=2):
    rng = np.random.default_rng(0)
    images_all = {}
    for fold in (1, 2, 3):
        images = rng.integers(0, 256, (n, 6, 7, 3)).astype(np.float64)
        masks = np.stack([_masks(empty=(fold == 3 and i == 1)) for i in range(n)])
        types = np.array([f"Tissue{fold}{i}" for i in range(n)])
        (root / f"Fold {fold}" / "images" / f"fold{fold}").mkdir(parents=True)
        (root / f"Fold {fold}" / "masks" / f"fold{fold}").mkdir(parents=True)
        np.save(root / f"Fold {fold}" / "images" / f"fold{fold}" / "images.npy", images)
        np.save(root / f"Fold {fold}" / "images" / f"fold{fold}" / "types.npy", types)
        np.save(root / f"Fold {fold}" / "masks" / f"fold{fold}" / "masks.npy", masks)
        images_all[fold] = images
    return images_all


def test_convert_synthetic_release(tmp_path):
    images = _native_release(tmp_path / "native")
    out = convert_pannuke(tmp_path / "native", tmp_path / "out", check_counts=False)
    train = pd.read_csv(out / "train" / "index.csv")
    assert train[["id", "fold", "index", "tissue", "nuclei"]].values.tolist() == [
        ["fold1_0000", 1, 0, "Tissue10", 3], ["fold1_0001", 1, 1, "Tissue11", 3],
        ["fold2_0000", 2, 0, "Tissue20", 3], ["fold2_0001", 2, 1, "Tissue21", 3]]
    test = pd.read_csv(out / "test" / "index.csv")
    assert test[["id", "nuclei"]].values.tolist() == [["fold3_0000", 3], ["fold3_0001", 0]]  # empty GT kept
    np.testing.assert_array_equal(read_label(out / "train/labels/fold2_0001.png"), _expected_label())
    assert not read_label(out / "test/labels/fold3_0001.png").any()
    np.testing.assert_array_equal(read_image(out / "test/images/fold3_0000.png"), images[3][0].astype(np.uint8))
    classes = pd.read_csv(out / "test" / "instance_classes.csv")
    assert classes.values.tolist() == [["fold3_0000", 1, "neoplastic"], ["fold3_0000", 2, "neoplastic"],
                                       ["fold3_0000", 3, "connective"]]
    assert verify_manifest(out) == []


def test_fold_size_is_checked(tmp_path):
    _native_release(tmp_path / "native")
    with pytest.raises(ValueError, match=r"images\.npy: 2 images; fold 1 of PanNuke has 2656"):
        convert_pannuke(tmp_path / "native", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_array_and_bad_shapes(tmp_path):
    _native_release(tmp_path / "native")
    np.save(tmp_path / "native/Fold 2/masks/fold2/masks.npy", np.zeros((3, 6, 7, 6)))
    with pytest.raises(ValueError, match=r"fold2/masks\.npy: shape \(3, 6, 7, 6\); expected \(2, 6, 7, 6\)"):
        convert_pannuke(tmp_path / "native", tmp_path / "out", check_counts=False)
    (tmp_path / "native/Fold 2/masks/fold2/masks.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"fold 2 lacks \['masks\.npy'\]"):
        convert_pannuke(tmp_path / "native", tmp_path / "out", check_counts=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images.npy / masks.npy / types.npy"):
        convert_pannuke(tmp_path / "empty", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_out_of_range_image_values_are_rejected(tmp_path):
    _native_release(tmp_path / "native")
    path = tmp_path / "native/Fold 1/images/fold1/images.npy"
    images = np.load(path)
    images[1, 0, 0, 0] = 300.0
    np.save(path, images)
    with pytest.raises(ValueError, match=r"images\.npy\[1\]: image values outside \[0, 255\]"):
        convert_pannuke(tmp_path / "native", tmp_path / "out", check_counts=False)
