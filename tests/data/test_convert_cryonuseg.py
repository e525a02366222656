"""CryoNuSeg: TIFF label masks per annotator, COIN split by the _01/_02/_03 suffix, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellseg.data.convert.common import CountMismatchError, verify_manifest
from cellseg.data.convert.cryonuseg import convert_cryonuseg
from cellseg.utils.io import read_image, read_label

A1 = "Annotator 1 (biologist)"
A2 = "Annotator 2 (bioinformatician)"
IDS = ("Human_Kidney_01", "Human_Kidney_02", "Human_Kidney_03", "Human_Skin_03")


def _label(k):
    label = np.zeros((5, 6), np.uint16)
    label[0:2, 0:2] = 3 + k
    label[3:5, 3:6] = 40
    return label


def _native_release(root, label_dir=f"{A1}/label masks modify", ids=IDS):
    rng = np.random.default_rng(0)
    (root / "tissue images").mkdir(parents=True)
    (root / label_dir).mkdir(parents=True)
    images = {}
    for k, image_id in enumerate(ids):
        images[image_id] = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        tifffile.imwrite(root / "tissue images" / f"{image_id}.tif", images[image_id])
        tifffile.imwrite(root / label_dir / f"{image_id}.tif", _label(k))
    return images


def test_convert_synthetic_release(tmp_path):
    images = _native_release(tmp_path / "native")
    out = convert_cryonuseg(tmp_path / "native", tmp_path / "out", check_counts=False)
    train = pd.read_csv(out / "train" / "index.csv")
    test = pd.read_csv(out / "test" / "index.csv")
    assert train[["id", "nuclei", "organ"]].values.tolist() == [["Human_Kidney_01", 2, "Human_Kidney"],
                                                               ["Human_Kidney_02", 2, "Human_Kidney"]]
    assert test["id"].tolist() == ["Human_Kidney_03", "Human_Skin_03"]
    assert (test["annotator"] == "annotator1").all()
    np.testing.assert_array_equal(read_label(out / "test/labels/Human_Skin_03.png"), _label(3))
    np.testing.assert_array_equal(read_image(out / "train/images/Human_Kidney_02.png"), images["Human_Kidney_02"])
    assert verify_manifest(out) == []


def test_other_annotator_in_nested_folder(tmp_path):
    _native_release(tmp_path / "native", label_dir=f"{A2}/{A2}/label masks modify")
    out = convert_cryonuseg(tmp_path / "native", tmp_path / "out", check_counts=False, annotator="annotator2")
    assert pd.read_csv(out / "train" / "index.csv")["annotator"].tolist() == ["annotator2", "annotator2"]
    with pytest.raises(FileNotFoundError, match=r"no label folder for annotator1; expected one of"):
        convert_cryonuseg(tmp_path / "native", tmp_path / "out2", check_counts=False)
    with pytest.raises(ValueError, match="unknown CryoNuSeg annotator 'bob'"):
        convert_cryonuseg(tmp_path / "native", tmp_path / "out2", annotator="bob")


def test_counts_and_bad_ids(tmp_path):
    _native_release(tmp_path / "native")
    with pytest.raises(CountMismatchError, match="split 'test' has 2 images, expected 10"):
        convert_cryonuseg(tmp_path / "native", tmp_path / "out")
    _native_release(tmp_path / "bad", ids=("Human_Kidney_07",))
    with pytest.raises(ValueError, match=r"Human_Kidney_07\.tif: image id 'Human_Kidney_07' does not end in _01"):
        convert_cryonuseg(tmp_path / "bad", tmp_path / "out", check_counts=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_images_folder_or_label(tmp_path):
    _native_release(tmp_path / "native")
    (tmp_path / "native" / A1 / "label masks modify" / "Human_Skin_03.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"no label mask for images \[.*Human_Skin_03\.tif"):
        convert_cryonuseg(tmp_path / "native", tmp_path / "out", check_counts=False)
    with pytest.raises(FileNotFoundError, match=r"expected one of \['tissue images'\]"):
        convert_cryonuseg(tmp_path / "native" / A1, tmp_path / "out")
