"""COIN layout: B*256+G mask codec (BGR order), mis-ordered masks rejected, generic COIN and BRCA converters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cellseg.data.convert.coin_layout import (
    convert_brca,
    convert_coin,
    decode_coin_mask,
    encode_coin_mask,
    read_coin_mask,
)
from cellseg.data.convert.common import CountMismatchError, verify_manifest
from cellseg.utils.io import read_image, read_label


def _label():
    label = np.zeros((5, 6), np.int32)
    label[0, 0], label[1, 1:3], label[4, 5], label[2, 4] = 1, 255, 256, 65535
    label[3, 0] = 300
    return label


def test_encoding_is_b256_plus_g_in_bgr_order():
    bgr = encode_coin_mask(_label())
    assert tuple(bgr[4, 5]) == (1, 0, 0)  # id 256 -> B = 1, G = 0, R = 0
    assert tuple(bgr[3, 0]) == (1, 44, 0)  # 300 = 1 * 256 + 44
    assert tuple(encode_coin_mask(_label(), "rgb")[3, 0]) == (0, 44, 1)


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_round_trip(order):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 65536, (9, 11))
    np.testing.assert_array_equal(decode_coin_mask(encode_coin_mask(label, order), order), label)
    np.testing.assert_array_equal(decode_coin_mask(encode_coin_mask(label, "bgr")[..., ::-1], "rgb"), label)


def test_mis_ordered_mask_is_rejected():
    swapped = encode_coin_mask(_label(), "bgr")  # decoded as if it were RGB: B lands in R
    with pytest.raises(ValueError, match=r"m\.png: 3 pixels have R != 0"):
        decode_coin_mask(swapped, "rgb", source="m.png")
    with pytest.raises(ValueError, match="channel_order 'grb'"):
        decode_coin_mask(swapped, "grb")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        encode_coin_mask(np.array([[70000]]))


def _write_mask(path, label, order="rgb"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(encode_coin_mask(label, order)).save(path)  # PIL writes RGB: a correct file needs "rgb"


def _native(root, domains=("train", "test"), n=2):
    rng = np.random.default_rng(0)
    for domain in domains:
        for k in range(n):
            (root / domain / "image").mkdir(parents=True, exist_ok=True)
            tif = domain == "train" and k == 0
            image = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / domain / "image" / f"{domain}{k}.{'tif' if tif else 'png'}")
            _write_mask(root / domain / "mask" / f"{domain}{k}.png", _label() if k == 0 else _label() // 3)


def test_read_coin_mask_files(tmp_path):
    _write_mask(tmp_path / "good.png", _label())
    np.testing.assert_array_equal(read_coin_mask(tmp_path / "good.png"), _label())
    _write_mask(tmp_path / "swapped.png", _label(), order="bgr")  # cv2-ordered array saved by PIL
    with pytest.raises(ValueError, match=r"swapped\.png: 3 pixels have R != 0"):
        read_coin_mask(tmp_path / "swapped.png")


def test_convert_generic_coin_layout(tmp_path):
    _native(tmp_path / "TNBC", domains=("train", "test", "Fold1"))
    out = convert_coin(tmp_path / "TNBC", tmp_path / "out")
    assert out == tmp_path / "out" / "TNBC"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["Fold1", "test", "train"]
    np.testing.assert_array_equal(read_label(out / "train/labels/train0.png"), _label())
    assert read_image(out / "train/images/train0.png").shape == (5, 6, 3)  # from the .tif
    index = pd.read_csv(out / "test" / "index.csv")
    assert index[["id", "nuclei"]].values.tolist() == [["test0", 5], ["test1", 3]]  # ids {1, 255, 256, 300, 65535} and // 3
    assert verify_manifest(out) == []


def test_convert_brca_checks_counts_and_bad_masks(tmp_path):
    _native(tmp_path / "BRCA")
    with pytest.raises(CountMismatchError, match="split 'test' has 2 images, expected 30"):
        convert_brca(tmp_path / "BRCA", tmp_path / "out")
    out = convert_brca(tmp_path / "BRCA", tmp_path / "out", check_counts=False)
    assert out.name == "BRCA" and "BRCA" in (out / "SOURCE.md").read_text()
    _write_mask(tmp_path / "BRCA/test/mask/test1.png", _label(), order="bgr")
    with pytest.raises(ValueError, match=r"test1\.png: 3 pixels have R != 0"):
        convert_brca(tmp_path / "BRCA", tmp_path / "out2", check_counts=False)
    assert not (tmp_path / "out2" / "BRCA").exists()


def test_missing_mask_and_wrong_folder(tmp_path):
    _native(tmp_path / "X")
    (tmp_path / "X/test/mask/test1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask for images \[.*test1\.png"):
        convert_coin(tmp_path / "X", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"no <domain>/image/ \+ <domain>/mask/ folders"):
        convert_coin(tmp_path / "X" / "train", tmp_path / "out")
