"""CPM-17, CoNSeP, CCRCC: .mat instance maps (scipy.io.savemat fixtures), classes, v7.3 and key errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from cellseg.data.convert.common import CountMismatchError, verify_manifest
from cellseg.data.convert.matfiles import (
    convert_ccrcc,
    convert_consep,
    convert_cpm17,
    instance_classes,
    read_mat_instance_map,
)
from cellseg.utils.io import read_image, read_label


def _inst_map(k=0):
    label = np.zeros((6, 5), np.int32)
    label[0:2, 0:2] = 1
    label[3:6, 2:5] = 2 + k
    return label


def _type_map():
    types = np.zeros((6, 5), np.int32)
    types[0:2, 0:2] = 4
    types[3:6, 2:5] = 2
    types[3, 2] = 7  # minority pixel: the majority class wins
    return types


def _native_release(root, split_dirs, key, class_key=None, n=2):
    rng = np.random.default_rng(0)
    for split in split_dirs:
        (root / split / "Images").mkdir(parents=True)
        (root / split / "Labels").mkdir(parents=True)
        for k in range(n):
            image_id = f"{split.lower()}_{k}"
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(root / split / "Images" / f"{image_id}.png")
            variables = {key: _inst_map(k).astype(np.float64)}  # HoVer-Net stores doubles
            if class_key:
                variables[class_key] = _type_map()
            scipy.io.savemat(root / split / "Labels" / f"{image_id}.mat", variables)


def test_read_mat_instance_map_and_errors(tmp_path):
    scipy.io.savemat(tmp_path / "a.mat", {"inst_map": _inst_map().astype(np.float64), "type_map": _type_map()})
    label = read_mat_instance_map(tmp_path / "a.mat", "inst_map")
    assert label.dtype == np.int32
    np.testing.assert_array_equal(label, _inst_map())
    with pytest.raises(ValueError, match=r"a\.mat: no variable 'instance_map'; found \['inst_map', 'type_map'\]"):
        read_mat_instance_map(tmp_path / "a.mat", "instance_map")
    scipy.io.savemat(tmp_path / "frac.mat", {"inst_map": _inst_map() + 0.5})
    with pytest.raises(ValueError, match=r"frac\.mat: variable 'inst_map' holds non-integer values"):
        read_mat_instance_map(tmp_path / "frac.mat", "inst_map")
    with pytest.raises(FileNotFoundError, match=r"nothere\.mat"):
        read_mat_instance_map(tmp_path / "nothere.mat", "inst_map")


def test_v73_mat_file_gets_a_clear_error(tmp_path):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    (tmp_path / "v73.mat").write_bytes(header.ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match=r"v73\.mat: MATLAB v7\.3 \(HDF5\) file; h5py is not installed"):
        read_mat_instance_map(tmp_path / "v73.mat", "inst_map")


def test_instance_classes_majority_vote():
    label = _inst_map()
    label[5, 0] = 9  # an instance with no class pixel
    assert instance_classes(label, _type_map()) == {1: 4, 2: 2, 9: 0}


def test_convert_cpm17(tmp_path):
    _native_release(tmp_path / "native", ["train", "test"], "inst_map")
    out = convert_cpm17(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert out.name == "CPM-17"
    index = pd.read_csv(out / "test" / "index.csv")
    assert index[["id", "nuclei"]].values.tolist() == [["test_0", 2], ["test_1", 2]]
    np.testing.assert_array_equal(read_label(out / "train/labels/train_1.png"), _inst_map(1))
    assert read_image(out / "train/images/train_1.png").shape == (6, 5, 3)
    assert not (out / "train" / "instance_classes.csv").exists()
    assert verify_manifest(out) == []
    with pytest.raises(CountMismatchError, match="split 'train' has 2 images, expected 32"):
        convert_cpm17(tmp_path / "native", tmp_path / "out2")


def test_convert_consep_with_types(tmp_path):
    _native_release(tmp_path / "native", ["Train", "Test"], "inst_map", class_key="type_map")
    out = convert_consep(tmp_path / "native", tmp_path / "out", check_counts=False)
    classes = pd.read_csv(out / "train" / "instance_classes.csv")
    assert classes[classes["id"] == "train_1"][["instance", "class"]].values.tolist() == [
        [1, "dysplastic/malignant epithelial"], [3, "inflammatory"]]


def test_convert_ccrcc_three_splits(tmp_path):
    _native_release(tmp_path / "native", ["Train", "Valid", "Test"], "instance_map", class_key="class_map", n=1)
    out = convert_ccrcc(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test", "train", "val"]
    np.testing.assert_array_equal(read_label(out / "val/labels/valid_0.png"), _inst_map(0))
    classes = pd.read_csv(out / "val" / "instance_classes.csv")
    assert classes[["instance", "class"]].values.tolist() == [[1, "endothelial"], [2, "grade 2"]]


def test_wrong_key_wrong_folder_and_missing_label(tmp_path):
    _native_release(tmp_path / "native", ["Train", "Test"], "inst_map")
    with pytest.raises(ValueError, match=r"train_0\.mat: no variable 'instance_map'; found \['inst_map'\]"):
        convert_ccrcc(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r"no folder for a CoNSeP split; expected one of \['Train', 'Test'\]"):
        convert_consep(tmp_path / "native" / "Train", tmp_path / "out")
    (tmp_path / "native/Test/Labels/test_1.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \.mat label for images \[.*test_1\.png"):
        convert_consep(tmp_path / "native", tmp_path / "out", check_counts=False)
