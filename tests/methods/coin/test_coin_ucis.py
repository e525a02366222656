"""Stage 0: classical UCIS, stain selection, UCIS folder reader."""

from __future__ import annotations

import numpy as np
import pytest
from coin_synth import disk_label, grey_image, he_image
from PIL import Image

from cellseg.methods.coin import ucis
from cellseg.methods.coin.ucis import classical_ucis, read_ucis_folder, resolve_stain, stain_channel
from cellseg.utils.io import read_image, read_label, write_label


def _best_iou(label: np.ndarray, pred: np.ndarray, instance_id: int) -> float:
    target = label == instance_id
    ids, counts = np.unique(pred[target], return_counts=True)
    counts, ids = counts[ids > 0], ids[ids > 0]
    if ids.size == 0:
        return 0.0
    best = pred == ids[np.argmax(counts)]
    return (target & best).sum() / (target | best).sum()


def test_stain_auto_picks_by_colour_and_brightness(nuclei_label):
    assert resolve_stain(he_image(nuclei_label)) == "hematoxylin"
    assert resolve_stain(grey_image(nuclei_label, fluorescence=True)) == "intensity"
    assert resolve_stain(grey_image(nuclei_label, fluorescence=False)) == "inverted_intensity"
    with pytest.raises(ValueError, match="unknown stain"):
        resolve_stain(he_image(nuclei_label), "eosin")


@pytest.mark.parametrize("kind", ["he", "fluorescence", "brightfield"])
def test_stain_channel_is_bright_on_nuclei_and_in_unit_range(nuclei_label, kind):
    image = he_image(nuclei_label) if kind == "he" else grey_image(nuclei_label, fluorescence=kind == "fluorescence")
    signal = stain_channel(image)
    assert signal.dtype == np.float32 and signal.min() >= 0.0 and signal.max() <= 1.0
    assert signal[nuclei_label > 0].mean() > 0.8 and signal[nuclei_label == 0].mean() < 0.2


def test_stain_channel_rescales_by_first_and_99th_percentile():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    intensity = image.astype(np.float32).mean(axis=2) / 255.0
    lo, hi = np.percentile(intensity, [1, 99])
    expected = np.clip((intensity - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(stain_channel(image, "intensity"), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["he", "fluorescence", "brightfield"])
def test_classical_ucis_finds_every_disk_and_splits_touching_ones(nuclei_label, kind):
    image = he_image(nuclei_label) if kind == "he" else grey_image(nuclei_label, fluorescence=kind == "fluorescence")
    pred = classical_ucis(image)
    assert pred.dtype == np.int32 and pred.shape == nuclei_label.shape
    assert set(np.unique(pred)) == set(range(pred.max() + 1))  # ids 1..N without gaps
    assert pred.max() == nuclei_label.max()
    for instance_id in range(1, nuclei_label.max() + 1):
        assert _best_iou(nuclei_label, pred, instance_id) > 0.7, instance_id
    touching = pred[100, 30], pred[100, 48]
    assert touching[0] > 0 and touching[1] > 0 and touching[0] != touching[1]


def test_classical_ucis_drops_small_objects_and_fills_small_holes():
    label = disk_label((80, 80), [(20, 20, 2), (50, 50, 12)])  # a 13-px speck and a nucleus
    label[48:51, 48:51] = 0  # a 9-px hole inside the nucleus
    pred = classical_ucis(he_image(label))
    assert pred[20, 20] == 0
    assert pred.max() == 1 and pred[49, 49] == 1


def test_peak_free_blobs_are_kept_as_one_instance(nuclei_label, monkeypatch):
    monkeypatch.setattr(ucis, "peak_local_max", lambda *a, **k: np.zeros((0, 2), dtype=int))
    pred = classical_ucis(he_image(nuclei_label))
    # without peaks no blob is split: the touching pair stays one instance, the rest are kept whole
    assert pred.max() == nuclei_label.max() - 1
    assert pred[100, 30] == pred[100, 48] > 0


def test_classical_ucis_of_a_flat_image_is_empty():
    assert classical_ucis(np.full((32, 32, 3), 128, np.uint8)).max() == 0
    with pytest.raises(ValueError, match="unknown threshold"):
        classical_ucis(np.zeros((8, 8, 3), np.uint8), threshold="kmeans")


def test_read_ucis_folder_uint16(tmp_path):
    label = np.zeros((10, 12), np.int32)
    label[2:5, 3:6], label[6:9, 1:4] = 300, 70000 - 65536 + 1000  # ids above 255
    write_label(tmp_path / "img1.png", label)
    for fmt in ("auto", "uint16"):
        np.testing.assert_array_equal(read_ucis_folder(tmp_path, "img1", format=fmt), label)


def test_read_ucis_folder_coin_bgr(tmp_path):
    label = np.zeros((6, 7), np.int32)
    label[1:3, 1:3], label[4:6, 4:7] = 5, 2 * 256 + 17
    rgb = np.zeros((6, 7, 3), np.uint8)  # on disk (PIL) order: R = 0, G = id % 256, B = id // 256
    rgb[..., 1], rgb[..., 2] = label % 256, label // 256
    Image.fromarray(rgb).save(tmp_path / "a.png")
    for fmt in ("auto", "coin_bgr"):
        np.testing.assert_array_equal(read_ucis_folder(tmp_path, "a", format=fmt), label)
    rgb[0, 0, 0] = 255
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="bad.png"):
        read_ucis_folder(tmp_path, "bad")


def test_read_ucis_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_ucis_folder(tmp_path, "missing")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png"):
        read_ucis_folder(tmp_path, "rgb", format="uint16")
    with pytest.raises(ValueError, match="ucis.format"):
        read_ucis_folder(tmp_path, "rgb", format="jpeg")


def test_classical_ucis_on_a_monuseg_crop(shared_data_dir):
    images = sorted((shared_data_dir / "MoNuSeg" / "test" / "images").glob("*.png"))
    if not images:
        pytest.skip("no MoNuSeg test images under the shared data folder")
    image = read_image(images[0])[:256, :256]
    label = read_label(images[0].parent.parent / "labels" / images[0].name)[:256, :256]
    pred = classical_ucis(image)
    assert resolve_stain(image) == "hematoxylin"
    dice = 2 * np.sum((pred > 0) & (label > 0)) / (np.sum(pred > 0) + np.sum(label > 0))
    assert dice > 0.6  # sanity only (a wrong stain or threshold direction gives ~0.2)
    n_true = len(np.unique(label)) - 1  # cropped ids are not contiguous
    assert 0.5 * n_true < pred.max() < 3 * n_true
