"""synthesize_scribble (docs/data.md#scribbles): scribbles only on their side of the mask, counts of steps 3-4, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import label as connected_components
from skimage.morphology import skeletonize

from cellseg.data.weak import ScribbleLabels, synthesize_scribble
from cellseg.utils.ignore import IGNORE_CLASS

RATIOS = (0.1, 0.3, 0.5, 1.0)
IGNORE = IGNORE_CLASS


def n_components(mask: np.ndarray) -> int:
    return int(connected_components(mask, connectivity=2).max())


def expected_k(n_fg: int, ratio: float) -> int:
    # docs/data.md#scribbles step 3, written from the rule: keep all but floor(n (1 - r)) blobs.
    return n_fg - math.floor(n_fg * (1 - ratio))


def check_sides(label: np.ndarray, scribble: np.ndarray) -> None:
    mask = label > 0
    assert scribble.dtype == np.uint8 and scribble.shape == label.shape
    assert set(np.unique(scribble)) <= {0, 1, IGNORE}
    assert mask[scribble == 1].all(), "a foreground scribble pixel lies outside the nuclei"
    assert not mask[scribble == 0].any(), "a background scribble pixel lies inside a nucleus"
    assert skeletonize(mask)[scribble == 1].all(), "foreground scribbles must be skeleton pixels"
    assert skeletonize(~mask)[scribble == 0].all(), "background scribbles must lie on the background skeleton"


@pytest.mark.parametrize("ratio", RATIOS)
def test_only_scribbled_pixels_are_labelled_synthetic(nine_disks, ratio):
    label = nine_disks
    scribble, info = synthesize_scribble(label, ratio, np.random.default_rng(1))
    check_sides(label, scribble)
    assert info["n_fg"] == 9  # one skeleton component per disk
    assert (scribble != IGNORE).sum() < 0.2 * scribble.size  # scribbles are thin


@pytest.mark.parametrize("ratio", RATIOS)
def test_only_scribbled_pixels_are_labelled_real(monuseg_crops, ratio):
    for image_id, label in monuseg_crops.items():
        scribble, _ = synthesize_scribble(label, ratio, np.random.default_rng(7))
        check_sides(label, scribble)
        assert (scribble == 1).any() and (scribble == 0).any(), image_id


@pytest.mark.parametrize("ratio", RATIOS)
def test_counts_follow_steps_3_and_4(monuseg_crops, ratio):
    for image_id, label in monuseg_crops.items():
        scribble, info = synthesize_scribble(label, ratio, np.random.default_rng(3))
        skeleton_components = connected_components(skeletonize(label > 0), connectivity=2)
        n_fg = int(skeleton_components.max())
        assert info["n_fg"] == n_fg, image_id
        assert info["k_fg"] == expected_k(n_fg, ratio) >= 1, image_id
        # k whole skeletons kept: k components, each one entirely in or entirely out.
        fg = scribble == 1
        assert n_components(fg) == info["k_fg"], image_id
        kept_ids = np.unique(skeleton_components[fg])
        assert len(kept_ids) == info["k_fg"]
        assert fg.sum() == np.isin(skeleton_components, kept_ids).sum(), "a kept skeleton is incomplete"
        # min(k, n_bg) background segments.
        assert info["n_bg"] >= 1
        assert info["k_bg"] == min(info["k_fg"], info["n_bg"]), image_id
        assert n_components(scribble == 0) == info["k_bg"], image_id


def test_counts_on_synthetic_disks(nine_disks):
    label = nine_disks
    for ratio, k in ((0.1, 1), (0.3, 3), (0.5, 5), (1.0, 9)):  # 9 - floor(9 (1 - r)), by hand
        scribble, info = synthesize_scribble(label, ratio, np.random.default_rng(0))
        assert info["k_fg"] == k
        assert n_components(scribble == 1) == k
        kept_disks = np.unique(label[scribble == 1])
        assert len(kept_disks) == k and 0 not in kept_disks


def test_ratio_one_keeps_every_blob(nine_disks, monuseg_crops):
    for label in [nine_disks, *monuseg_crops.values()]:
        scribble, info = synthesize_scribble(label, 1.0, np.random.default_rng(0))
        mask = label > 0
        blobs = connected_components(mask, connectivity=2)
        assert set(np.unique(blobs[scribble == 1])) == set(range(1, int(blobs.max()) + 1))
        assert np.array_equal(scribble == 1, skeletonize(mask))
        assert info["k_fg"] == info["n_fg"]


def test_scarce_background_keeps_what_exists():
    # Foreground stripes separated by 1-px background lines: more blobs than background segments.
    label = np.ones((64, 64), dtype=np.int32)
    lines = (12, 25, 38, 51)
    label[:, list(lines)] = 0
    scribble, info = synthesize_scribble(label, 1.0, np.random.default_rng(0))
    assert info["n_fg"] == len(lines) + 1
    assert info["n_bg"] < info["k_fg"], "the fixture must exercise n_bg < k"
    assert info["k_bg"] == info["n_bg"] >= 1
    check_sides(label, scribble)


def test_full_foreground_and_empty_images():
    full = np.ones((48, 48), dtype=np.int32)
    scribble, info = synthesize_scribble(full, 0.3, np.random.default_rng(0))
    assert info["n_bg"] == 0 and info["k_bg"] == 0 and info["k_fg"] == 1
    assert not (scribble == 0).any() and (scribble == 1).any()

    empty = np.zeros((48, 48), dtype=np.int32)
    scribble, info = synthesize_scribble(empty, 0.3, np.random.default_rng(0))
    assert info["n_fg"] == 0 and info["k_fg"] == 0 and info["k_bg"] == 0
    assert (scribble == IGNORE).all()


def test_corner_cut_is_bounds_safe(nine_disks, monuseg_crops):
    # Without border exclusion peaks can sit on the image edge; the 3 x 3 removal must clip, not wrap or crash.
    for label in [nine_disks, *monuseg_crops.values()]:
        scribble, info = synthesize_scribble(
            label, 0.5, np.random.default_rng(0), min_distance=1, exclude_border=False
        )
        check_sides(label, scribble)
        assert info["n_bg"] >= 1


def test_same_rng_seed_same_scribble_and_different_seed_differs(monuseg_crops):
    label = next(iter(monuseg_crops.values()))
    first, _ = synthesize_scribble(label, 0.3, np.random.default_rng(11))
    again, _ = synthesize_scribble(label, 0.3, np.random.default_rng(11))
    other, _ = synthesize_scribble(label, 0.3, np.random.default_rng(12))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan"), "abc", None])
def test_invalid_ratio_names_the_config_key(nine_disks, ratio, tmp_path):
    with pytest.raises(ValueError, match="supervision.ratio"):
        synthesize_scribble(nine_disks, ratio, np.random.default_rng(0))
    with pytest.raises(ValueError, match="supervision.ratio"):
        ScribbleLabels(cache_dir=tmp_path, ratio=ratio)


def test_bad_ignore_index_and_unknown_corner_parameter(nine_disks, tmp_path):
    with pytest.raises(ValueError, match="ignore_index"):
        ScribbleLabels(cache_dir=tmp_path, ignore_index=1)
    with pytest.raises(ValueError, match="unknown corner parameters"):
        synthesize_scribble(nine_disks, 0.3, np.random.default_rng(0), sigma=2.0)
