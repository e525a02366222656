"""Semantic -> instance decoding: COIN watershed (A4), S2L connected components, cleaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from cellseg.postproc.instances import (
    clean_instances,
    connected_components,
    fill_instance_holes,
    semantic_to_instance,
    watershed_instances,
)
from cellseg.utils.io import read_label

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _disks(shape, specs) -> np.ndarray:
    """Boolean mask of the union of disks given as (row, col, radius)."""
    mask = np.zeros(shape, dtype=bool)
    for row, col, radius in specs:
        mask[disk((row, col), radius, shape=shape)] = True
    return mask


def _n_instances(label: np.ndarray) -> int:
    return len(np.unique(label[label > 0]))


def _best_iou(target: np.ndarray, label: np.ndarray) -> float:
    ids = np.unique(label[target])
    ious = [(target & (label == i)).sum() / (target | (label == i)).sum() for i in ids if i > 0]
    return max(ious, default=0.0)


def test_watershed_splits_two_overlapping_disks_and_keeps_every_pixel():
    mask = _disks((80, 80), [(30, 28, 14), (46, 50, 16)])
    label = watershed_instances(mask)
    assert label.dtype == np.int32
    assert _n_instances(label) == 2
    assert np.array_equal(label > 0, mask)
    # Each disk's centre lands in a different instance.
    assert label[30, 28] != label[46, 50]


def test_watershed_separate_blobs_each_get_one_instance():
    mask = _disks((90, 90), [(20, 20, 8), (20, 65, 9), (65, 40, 10)])
    label = watershed_instances(mask)
    assert _n_instances(label) == 3
    for row, col, radius in [(20, 20, 8), (20, 65, 9), (65, 40, 10)]:
        assert _best_iou(_disks(mask.shape, [(row, col, radius)]), label) == 1.0


def test_footprint_radius_controls_marker_suppression():
    mask = _disks((60, 80), [(30, 25, 10), (30, 41, 7)])
    assert _n_instances(watershed_instances(mask, footprint_radius=5)) == 2
    assert _n_instances(watershed_instances(mask, footprint_radius=20)) == 1


def test_peak_free_blob_dropped_by_default_and_kept_on_request():
    # The small disk lies inside the big disk's disk(12) footprint: no peak survives in it (COIN drops it).
    big, small = (40, 30, 15), (40, 52, 3)
    mask = _disks((80, 80), [big, small])
    small_mask = _disks(mask.shape, [small])
    dropped = watershed_instances(mask)
    assert _n_instances(dropped) == 1
    assert not dropped[small_mask].any()
    kept = watershed_instances(mask, keep_peakless=True)
    assert _n_instances(kept) == 2
    assert _best_iou(small_mask, kept) == 1.0


def test_one_pixel_border_is_excluded_from_peaks():
    mask = np.zeros((20, 20), dtype=bool)
    mask[0, 3:10] = True  # only in the excluded 1-px border: no peak
    assert _n_instances(watershed_instances(mask)) == 0
    assert _n_instances(watershed_instances(mask, keep_peakless=True)) == 1
    assert _n_instances(watershed_instances(mask, exclude_border=0)) == 1


def test_denoise_removes_isolated_speck():
    mask = _disks((40, 40), [(20, 20, 8)])
    mask[5, 5] = True
    assert _n_instances(watershed_instances(mask, keep_peakless=True)) == 2
    assert _n_instances(watershed_instances(mask, denoise=True, keep_peakless=True)) == 1


def test_empty_mask_gives_empty_label():
    label = watershed_instances(np.zeros((16, 16), dtype=bool))
    assert label.shape == (16, 16) and not label.any()


def test_bad_masks_and_options_raise():
    with pytest.raises(ValueError, match="threshold probabilities"):
        watershed_instances(np.full((8, 8), 0.7))
    with pytest.raises(ValueError, match="2-D"):
        watershed_instances(np.zeros((2, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="connectivity"):
        watershed_instances(np.ones((8, 8), dtype=bool), connectivity=6)


def test_connected_components_connectivity():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours
    assert _n_instances(connected_components(mask, connectivity=8)) == 1
    assert _n_instances(connected_components(mask, connectivity=4)) == 2


def test_clean_instances_min_area_holes_and_relabel():
    label = np.zeros((24, 24), dtype=np.int32)
    label[2:10, 2:10] = 5
    label[4:7, 4:7] = 0  # pure background hole: filled
    label[12:20, 12:20] = 9
    label[14:17, 14:17] = 0
    label[15, 15] = 30  # hole holding another instance: not filled over it
    label[0, 22] = 40  # 1-px instance: removed by min_area
    cleaned = clean_instances(label, min_area=2)
    assert cleaned.dtype == np.int32
    assert sorted(np.unique(cleaned)) == [0, 1, 2]
    assert (cleaned[2:10, 2:10] == 1).all()
    # The 1-px inner instance goes first (min_area), so its hole becomes pure background and is filled.
    assert (cleaned[12:20, 12:20] == 2).all()
    kept_inner = clean_instances(label, min_area=0)
    assert _n_instances(kept_inner) == 4
    ring = kept_inner == kept_inner[12, 12]
    assert not ring[14:17, 14:17].any()  # background around the inner instance is not swallowed
    assert kept_inner[0, 22] > 0


def test_fill_instance_holes_respects_max_hole():
    label = np.zeros((20, 20), dtype=np.int32)
    label[1:19, 1:19] = 1
    label[3:5, 3:5] = 0  # 4 px hole
    label[8:14, 8:14] = 0  # 36 px hole
    filled = fill_instance_holes(label, max_hole=10)
    assert (filled[3:5, 3:5] == 1).all()
    assert (filled[8:14, 8:14] == 0).all()
    assert (fill_instance_holes(label)[1:19, 1:19] == 1).all()


def test_semantic_to_instance_methods_and_errors():
    mask = _disks((80, 80), [(30, 28, 14), (46, 50, 16), (10, 70, 2)])
    assert _n_instances(semantic_to_instance(mask, method="cc")) == 2  # touching disks merged
    watershed = semantic_to_instance(mask, method="watershed", keep_peakless=True)
    assert _n_instances(watershed) == 3
    assert _n_instances(semantic_to_instance(mask, method="watershed", keep_peakless=True, min_area=20)) == 2
    assert sorted(np.unique(watershed)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="unknown; expected one of"):
        semantic_to_instance(mask, method="stardist")
    with pytest.raises(ValueError, match="does not take"):
        semantic_to_instance(mask, method="cc", footprint_radius=3)


def _matched_fraction(gt: np.ndarray, pred: np.ndarray) -> float:
    ids = np.unique(gt[gt > 0])
    return float(np.mean([_best_iou(gt == i, pred) > 0.5 for i in ids]))


def test_watershed_separates_touching_nuclei_of_real_monuseg_crop():
    path = DATA_DIR / "MoNuSeg" / "train" / "labels" / "TCGA-18-5592-01Z-00-DX1.png"
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data folder {DATA_DIR} not found")
    gt = read_label(path)[:256, :256]
    foreground = gt > 0
    cc = semantic_to_instance(foreground, method="cc")
    watershed = semantic_to_instance(foreground, method="watershed")
    assert _n_instances(cc) < _n_instances(gt)  # the crop has touching nuclei
    assert _matched_fraction(gt, watershed) > _matched_fraction(gt, cc)
    assert _matched_fraction(gt, watershed) >= 0.75
