"""Crop geometry: the ShiftScaleRotate option moves image, target and state maps identically."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg.data.transforms import AugmentConfig, CropGeometry, apply_geometry, sample_geometry


def test_a_quarter_turn_equals_rot90_for_images_and_targets():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (9, 9)).astype(np.int32)
    turned = CropGeometry(0, 0, 9, angle=90.0)
    np.testing.assert_array_equal(apply_geometry(image, turned, fill=None), np.rot90(image, 1))
    np.testing.assert_array_equal(apply_geometry(label, turned, fill=0), np.rot90(label, 1))


def test_shift_moves_content_by_whole_pixels_with_reflect_101_borders():
    label = np.arange(36, dtype=np.int32).reshape(6, 6)
    shifted = apply_geometry(label, CropGeometry(0, 0, 6, shift_x=2.0), fill=0)
    np.testing.assert_array_equal(shifted[:, 2:], label[:, :-2])
    np.testing.assert_array_equal(shifted[:, :2], label[:, [2, 1]])  # mirror without repeating the edge


def test_zoom_keeps_the_centre_and_magnifies():
    label = np.zeros((11, 11), dtype=np.int32)
    label[4:7, 4:7] = 1
    zoomed = apply_geometry(label, CropGeometry(0, 0, 11, zoom=2.0), fill=0)
    assert zoomed[5, 5] == 1 and 20 <= int(zoomed.sum()) <= 49  # 9 px grow to about 36


def test_state_map_and_target_stay_aligned_under_a_random_affine():
    """S2L cuts its EMA map with the crop's geometry: it must land on the same pixels as the scribble map."""
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, (40, 50)).astype(np.uint8)
    cfg = AugmentConfig(affine_p=1.0)
    for _ in range(5):
        geometry = sample_geometry(target.shape, 32, rng, cfg)
        assert geometry.has_affine
        assert CropGeometry.from_tensor(geometry.as_tensor()) == geometry
        cut_target = apply_geometry(target, geometry, fill=250)
        cut_state = apply_geometry(target.astype(np.float32), geometry, fill=np.nan)
        np.testing.assert_array_equal(cut_state, cut_target.astype(np.float32))


@pytest.mark.parametrize("affine_p", [0.0, 1.0])
def test_affine_is_drawn_only_with_its_probability(affine_p):
    rng = np.random.default_rng(2)
    draws = [sample_geometry((64, 64), 32, rng, AugmentConfig(affine_p=affine_p)) for _ in range(20)]
    assert all(g.has_affine == bool(affine_p) for g in draws)
    for g in draws if affine_p else []:
        assert abs(g.angle) <= 45 and 0.9 <= g.zoom <= 1.1 and max(abs(g.shift_x), abs(g.shift_y)) <= 2.0
