"""DSB2018: RLE codec, mask merging and the converter on a synthetic native release."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cellseg.data.convert.common import CountMismatchError, verify_manifest
from cellseg.data.convert.dsb2018 import convert_dsb2018, merge_binary_masks, rle_decode, rle_encode
from cellseg.utils.io import read_image, read_label


def test_rle_hand_case_is_one_based_and_column_major():
    mask = np.zeros((3, 2), bool)
    mask[1, 0] = mask[2, 0] = mask[0, 1] = True  # column-major positions 2, 3, 4 (1-based)
    mask_two_runs = np.zeros((3, 2), bool)
    mask_two_runs[0, 0] = mask_two_runs[2, 1] = True  # positions 1 and 6
    assert rle_encode(mask) == "2 3"
    assert rle_encode(mask_two_runs) == "1 1 6 1"
    np.testing.assert_array_equal(rle_decode("2 3", (3, 2)), mask)
    np.testing.assert_array_equal(rle_decode("1 1 6 1", (3, 2)), mask_two_runs)
    assert not rle_decode("", (3, 2)).any() and rle_encode(np.zeros((3, 2))) == ""


def test_rle_round_trips_on_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (31, 17)]:
        for density in (0.1, 0.5, 0.95):
            mask = rng.random(shape) < density
            mask[0, 0] = mask[-1, -1] = True  # runs touching both ends
            np.testing.assert_array_equal(rle_decode(rle_encode(mask), shape), mask)


@pytest.mark.parametrize(("rle", "message"), [("1 2 3", "odd number"), ("5 3", "outside"), ("0 1", "outside"),
                                              ("a b", "expected integers")])
def test_rle_decode_rejects_bad_strings(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (2, 3))


def _write_mask(path, mask):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def test_merge_binary_masks_sorted_order_later_wins(tmp_path):
    a, b, c = (np.zeros((4, 5), bool) for _ in range(3))
    a[0:2, 0:2] = True
    b[1:3, 1:3] = True  # overlaps a at (1, 1)
    c[3, 4] = True
    for name, mask in [("c.png", c), ("a.png", a), ("b.png", b)]:
        _write_mask(tmp_path / name, mask)
    label = merge_binary_masks([tmp_path / "c.png", tmp_path / "b.png", tmp_path / "a.png"])
    expected = np.zeros((4, 5), np.int32)
    expected[0:2, 0:2] = 1
    expected[1:3, 1:3] = 2
    expected[3, 4] = 3
    np.testing.assert_array_equal(label, expected)


def test_merge_binary_masks_rejects_size_mismatch(tmp_path):
    _write_mask(tmp_path / "a.png", np.ones((4, 5), bool))
    _write_mask(tmp_path / "b.png", np.ones((4, 6), bool))
    with pytest.raises(ValueError, match=r"b\.png: mask has shape \(4, 6\)"):
        merge_binary_masks([tmp_path / "a.png", tmp_path / "b.png"])


# Three modalities: dark grey (fluorescence), bright grey (bright-field), pink (H&E).
COLOURS = {"fluo": (20, 20, 20), "bright": (200, 200, 200), "he": (200, 120, 180)}


def _rgba(colour, shape=(6, 8)):
    image = np.zeros((*shape, 4), np.uint8)
    image[..., :3] = colour
    image[..., 3] = 255
    image[2, 2, :3] = (255, 255, 255)
    return image


def _sample(root, image_id, colour, masks):
    (root / image_id / "images").mkdir(parents=True)
    Image.fromarray(_rgba(colour)).save(root / image_id / "images" / f"{image_id}.png")
    for k, mask in enumerate(masks):
        _write_mask(root / image_id / "masks" / f"m{k:02d}.png", mask)


def _box(r0, r1, c0, c1, shape=(6, 8)):
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _native_release(root):
    train = root / "stage1_train"
    _sample(train, "fluo1", COLOURS["fluo"], [_box(0, 2, 0, 2), _box(1, 3, 1, 3)])
    _sample(train, "fluo2", (25, 25, 25), [_box(4, 6, 5, 8)])
    _sample(train, "bright1", COLOURS["bright"], [_box(0, 1, 0, 8)])
    _sample(train, "he1", COLOURS["he"], [_box(3, 5, 3, 5), _box(0, 1, 0, 1)])
    test = root / "stage1_test"
    _sample(test, "he2", (190, 110, 170), [])
    first, second = _box(0, 2, 0, 3), _box(4, 6, 6, 8)
    pd.DataFrame({
        "ImageId": ["he2", "he2"], "EncodedPixels": [rle_encode(first), rle_encode(second)],
        "Height": [6, 6], "Width": [8, 8], "Usage": ["Public", "Private"],
    }).to_csv(root / "stage1_solution.csv", index=False)
    return first, second


def test_convert_synthetic_release(tmp_path):
    first, second = _native_release(tmp_path / "native")
    out = convert_dsb2018(tmp_path / "native", tmp_path / "out", check_counts=False)
    train = pd.read_csv(out / "stage1_train" / "index.csv").set_index("id")
    assert sorted(train.index) == ["bright1", "fluo1", "fluo2", "he1"]
    assert train.loc["fluo1", ["nuclei", "masks", "overlap_px"]].tolist() == [2, 2, 1]
    assert train["modality"].to_dict() == {"bright1": "brightfield", "fluo1": "fluorescence", "fluo2": "fluorescence",
                                           "he1": "histopathology"}
    expected = np.zeros((6, 8), np.int32)
    expected[0:2, 0:2] = 1
    expected[1:3, 1:3] = 2
    np.testing.assert_array_equal(read_label(out / "stage1_train/labels/fluo1.png"), expected)
    image = read_image(out / "stage1_train/images/fluo1.png")
    assert image.shape == (6, 8, 3) and tuple(image[0, 0]) == COLOURS["fluo"]  # alpha dropped
    test = pd.read_csv(out / "stage1_test" / "index.csv")
    assert test[["id", "nuclei", "masks", "modality"]].values.tolist() == [["he2", 2, 2, "histopathology"]]
    np.testing.assert_array_equal(read_label(out / "stage1_test/labels/he2.png"), first * 1 + second * 2)
    assert "CC0" in (out / "SOURCE.md").read_text()
    assert verify_manifest(out) == []


def test_convert_checks_counts(tmp_path):
    _native_release(tmp_path / "native")
    with pytest.raises(CountMismatchError, match="stage1_train' has 4 images, expected 670 or 664"):
        convert_dsb2018(tmp_path / "native", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_mask_folder_is_an_error(tmp_path):
    _native_release(tmp_path / "native")
    for mask in (tmp_path / "native/stage1_train/he1/masks").iterdir():
        mask.unlink()
    (tmp_path / "native/stage1_train/he1/masks").rmdir()
    with pytest.raises(FileNotFoundError, match=r"he1/masks: missing mask folder"):
        convert_dsb2018(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_or_wrong_solution_csv_is_an_error(tmp_path):
    _native_release(tmp_path / "native")
    solution = tmp_path / "native" / "stage1_solution.csv"
    frame = pd.read_csv(solution)
    frame["Height"] = 7
    frame.to_csv(solution, index=False)
    with pytest.raises(ValueError, match=r"stage1_solution\.csv: Height/Width \[\(7, 8\)\] differ"):
        convert_dsb2018(tmp_path / "native", tmp_path / "out", check_counts=False)
    solution.unlink()
    with pytest.raises(FileNotFoundError, match=r"stage1_solution\.csv: missing"):
        convert_dsb2018(tmp_path / "native", tmp_path / "out", check_counts=False)
    with pytest.raises(FileNotFoundError, match=r"expected one of \['stage1_train', 'stage1_test'\]"):
        convert_dsb2018(tmp_path / "native" / "stage1_train", tmp_path / "out")
