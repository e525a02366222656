"""Stage 2b: prompt points and the classical prompter."""

from __future__ import annotations

import numpy as np
import pytest
from coin_synth import disk_label, he_image

from cellseg.methods.coin.prompter import (
    ClassicalPrompter,
    PromptedMask,
    centroid_point,
    interior_point,
    median_radius,
    prompt_masks,
)


def test_interior_point_is_the_distance_maximum_with_row_major_ties():
    mask = np.zeros((7, 9), bool)
    mask[1:6, 2:7] = True  # 5 x 5 square: unique centre
    assert interior_point(mask) == (3, 4)
    mask = np.zeros((6, 10), bool)
    mask[1:5, 1:9] = True  # 4 x 8: the 2 x 6 core ties, the first in row-major order wins
    assert interior_point(mask) == (2, 2)


def test_interior_point_lies_inside_a_non_convex_shape_where_the_centroid_does_not():
    mask = np.zeros((21, 21), bool)
    mask[2:19, 2:7] = True  # a C: left bar plus top and bottom arms
    mask[2:7, 2:19] = True
    mask[14:19, 2:19] = True
    row, col = centroid_point(mask)
    assert not mask[row, col]
    assert mask[interior_point(mask)]


def test_interior_point_treats_outside_the_image_as_background():
    mask = np.zeros((5, 12), bool)
    mask[:, 0:6] = True  # cut by three image borders: without padding the border column would win
    assert interior_point(mask) == (2, 2)


def test_centroid_point_is_the_integer_part_of_the_means():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 3] = True  # means 0.5 and 1.5
    assert centroid_point(mask) == (0, 1)
    with pytest.raises(ValueError, match="empty"):
        centroid_point(np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((2, 2), bool))


def test_median_radius_and_auto_window():
    label = disk_label((60, 60), [(15, 15, 5), (40, 40, 8), (15, 45, 3)])
    areas = np.bincount(label.ravel())[1:]
    assert median_radius(label) == pytest.approx(np.sqrt(np.median(areas) / np.pi))
    assert median_radius(np.zeros((4, 4), int)) == 0.0
    assert ClassicalPrompter().half_size(3.0) == 16  # max(16, 3 r_med)
    assert ClassicalPrompter().half_size(10.0) == 30
    assert ClassicalPrompter(window=7).half_size(10.0) == 7


@pytest.mark.parametrize("method", ["local_otsu", "random_walker", "morph_chan_vese"])
def test_prompter_segments_the_prompted_nucleus_only(method):
    label = disk_label((80, 80), [(40, 36, 9), (40, 55, 8), (10, 10, 6)])  # a neighbour 1 px away
    stain = np.where(label > 0, 0.9, 0.1) + np.random.default_rng(0).normal(0, 0.03, label.shape)
    stain = np.clip(stain, 0, 1)
    mask = ClassicalPrompter(method=method).segment(stain, (40, 36), r_med=9.0)
    target = label == 1
    assert mask.shape == label.shape and mask[40, 36]
    assert (mask & target).sum() / (mask | target).sum() > 0.8
    assert not mask[label == 2].any() and not mask[label == 3].any()


def test_prompter_window_and_errors():
    stain = np.zeros((50, 50))
    stain[20:30, 20:30] = 1.0
    crop, offset = ClassicalPrompter(window=16).segment_window(stain, (25, 25), r_med=5.0)
    assert offset == (9, 9) and crop.shape == (33, 33)
    assert crop.sum() == 100  # the square, in window coordinates
    crop, offset = ClassicalPrompter(window=16).segment_window(stain, (3, 48), r_med=5.0)
    assert offset == (0, 32) and crop.shape == (20, 18)  # clipped at the image border
    with pytest.raises(ValueError, match="outside the image"):
        ClassicalPrompter().segment(stain, (50, 3), r_med=5.0)
    with pytest.raises(ValueError, match="prompter.method"):
        ClassicalPrompter(method="sam")
    with pytest.raises(ValueError, match="prompter.window"):
        ClassicalPrompter(window="big")


def test_prompt_masks_one_crop_per_instance(nuclei_label):
    image = he_image(nuclei_label)
    instances = nuclei_label.copy()
    instances[instances == 3] = 0  # a gap in the ids
    prompted = prompt_masks(image, instances, prompt_point="interior")
    assert [p.instance_id for p in prompted] == sorted(set(np.unique(instances)) - {0})
    touching = {6, 7}  # a threshold prompter merges the touching pair: low IoU, as scoring intends
    for p in prompted:
        assert isinstance(p, PromptedMask)
        full = p.to_full(instances.shape)
        target = nuclei_label == p.instance_id
        iou = (full & target).sum() / (full | target).sum()
        assert (iou < 0.7) if p.instance_id in touching else (iou > 0.7), p.instance_id
    with pytest.raises(ValueError, match="prompt_point"):
        prompt_masks(image, instances, prompt_point="corner")
