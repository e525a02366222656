"""Three-class (background / inside / boundary) targets and decoding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.postproc.instances import connected_components
from cellseg.postproc.three_class import class_map_to_probs, decode_three_class, three_class_targets

CENTRES = [(20, 20), (20, 36), (36, 28), (60, 60), (60, 76), (78, 30), (80, 82)]


def _touching_disks(shape=(100, 100), radius=10) -> np.ndarray:
    """Disks of `radius`; overlapping parts go to the nearest centre, so neighbours touch along a line."""
    rows, cols = np.indices(shape)
    sq_dist = np.stack([(rows - r) ** 2 + (cols - c) ** 2 for r, c in CENTRES])
    return np.where(sq_dist.min(0) <= radius**2, sq_dist.argmin(0) + 1, 0).astype(np.int32)


def _assert_recovered(truth: np.ndarray, decoded: np.ndarray, min_iou: float = 0.8) -> None:
    assert decoded.max() == truth.max()
    for instance_id in range(1, truth.max() + 1):
        target = truth == instance_id
        ious = [
            (target & (decoded == j)).sum() / (target | (decoded == j)).sum()
            for j in range(1, decoded.max() + 1)
        ]
        assert max(ious) > min_iou, f"instance {instance_id} best IoU {max(ious):.3f}"


def test_targets_classes_and_separated_insides():
    truth = _touching_disks()
    targets = three_class_targets(truth)
    assert targets.dtype == np.uint8
    assert set(np.unique(targets)) == {0, 1, 2}
    assert np.array_equal(targets > 0, truth > 0)
    # Every pixel of an instance with a 4-neighbour of another id (or background) is boundary.
    padded = np.pad(truth, 1)
    for dr, dc in [(-1, 0), (1, 0), (0, -1), (0, 1)]:
        neighbour = padded[1 + dr : 1 + dr + truth.shape[0], 1 + dc : 1 + dc + truth.shape[1]]
        assert (targets[(truth > 0) & (neighbour != truth)] == 2).all()
    # Insides of touching nuclei are not 4-connected, so each nucleus has exactly one inside component.
    inside, n_inside = ndi.label(targets == 1)
    assert n_inside == truth.max()
    assert connected_components(truth > 0).max() < truth.max()  # the scenario really has touching nuclei


def test_thicker_boundary_stays_inside_foreground():
    truth = _touching_disks()
    thin, thick = three_class_targets(truth, 1), three_class_targets(truth, 2)
    assert (thick == 2).sum() > (thin == 2).sum()
    assert np.array_equal(thick > 0, truth > 0)
    _assert_recovered(truth, decode_three_class(thick))
    with pytest.raises(ValueError, match="boundary_width"):
        three_class_targets(truth, 0)


@pytest.mark.parametrize("energy", ["probability", "distance"])
def test_decode_one_hot_targets_recovers_touching_instances(energy):
    truth = _touching_disks()
    probs = class_map_to_probs(three_class_targets(truth))
    _assert_recovered(truth, decode_three_class(probs, energy=energy))


def test_decode_class_map_and_soft_probabilities():
    truth = _touching_disks()
    targets = three_class_targets(truth)
    _assert_recovered(truth, decode_three_class(targets))
    soft = np.stack([ndi.gaussian_filter(p, 0.7) for p in class_map_to_probs(targets)])
    soft /= soft.sum(0, keepdims=True)
    _assert_recovered(truth, decode_three_class(soft))


def test_unmarked_objects_dropped_or_kept():
    truth = _touching_disks()
    truth[95:97, 5:40] = truth.max() + 1  # 2-px wide strip: all boundary, no inside marker
    probs = class_map_to_probs(three_class_targets(truth))
    dropped = decode_three_class(probs)
    assert dropped.max() == truth.max() - 1
    assert not dropped[95:97, 5:40].any()
    kept = decode_three_class(probs, keep_unmarked=True)
    assert kept.max() == truth.max()
    assert len(np.unique(kept[95:97, 5:40])) == 1 and kept[95, 5] > 0


def test_min_area_applies_after_decoding():
    truth = _touching_disks()
    probs = class_map_to_probs(three_class_targets(truth))
    assert decode_three_class(probs, min_area=10_000).max() == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        decode_three_class(np.zeros((2, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="outside 0..2"):
        decode_three_class(np.full((8, 8), 3))
    with pytest.raises(ValueError, match="energy"):
        decode_three_class(np.zeros((8, 8), dtype=np.int64), energy="sobel")
