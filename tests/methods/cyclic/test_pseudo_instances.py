"""Cyclic relevance -> pseudo instances (docs/methods/cyclic.md#pseudo-instances) on hand-built relevance maps of squares with known areas."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk as draw_disk

from cellseg.methods.cyclic.pseudo_instances import (
    candidate_areas,
    extract_pseudo_instances,
    filter_candidates,
    instances_per_image,
    rank_candidates,
    reference_area,
    relevance_candidates,
)
from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

# Small-image parameters (the defaults are for 40x images): areas 20..200 px, tau 0.3.
PARAMS = {"tau": 0.3, "min_area": 20, "max_area": 200, "min_solidity": 0.85, "exclude_border": True}


def square(relevance: np.ndarray, top: int, left: int, rows: int, cols: int, value: float) -> np.ndarray:
    relevance[top : top + rows, left : left + cols] = value
    mask = np.zeros(relevance.shape, dtype=bool)
    mask[top : top + rows, left : left + cols] = True
    return mask


@pytest.fixture
def four_squares():
    """60 x 130 map: A 10x10 (100 px, R 1.0), B 8x8 (64 px, 0.8), C 12x12 (144 px, 0.6), D 6x6 (36 px, 0.5),
    plus a faint square (0.2 < tau) that is not relevant; masks by name."""
    relevance = np.zeros((60, 130))
    masks = {
        "A": square(relevance, 10, 10, 10, 10, 1.0),
        "B": square(relevance, 10, 40, 8, 8, 0.8),
        "C": square(relevance, 10, 70, 12, 12, 0.6),
        "D": square(relevance, 10, 100, 6, 6, 0.5),
    }
    square(relevance, 40, 40, 10, 10, 0.2)
    return relevance, masks


def within(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels at Euclidean distance <= radius from an axis-aligned rectangle mask (its disk dilation), by hand."""
    rows, cols = np.nonzero(mask)
    rr, cc = np.indices(mask.shape)
    dr = np.maximum.reduce([rows.min() - rr, np.zeros_like(rr), rr - rows.max()])
    dc = np.maximum.reduce([cols.min() - cc, np.zeros_like(cc), cc - cols.max()])
    return dr**2 + dc**2 <= radius**2


def instance_masks(label: np.ndarray) -> list[np.ndarray]:
    return [label == i for i in range(1, int(label[label != IGNORE].max(initial=0)) + 1)]


def test_ranking_closest_area_first_and_descending_with_the_flag(four_squares):
    relevance, masks = four_squares
    label, info = extract_pseudo_instances(relevance, area_ref=100.0, k=4, **PARAMS)
    assert label.dtype == np.uint16
    # |area - 100|: A 0, B 36, C 44, D 64
    assert [m.tolist() for m in instance_masks(label)] == [masks[n].tolist() for n in "ABCD"]
    assert info["n_candidates"] == 4 and sorted(info["candidate_areas"]) == [36, 64, 100, 144]
    flipped, _ = extract_pseudo_instances(relevance, area_ref=100.0, k=4, rank_descending=True, **PARAMS)
    assert [m.tolist() for m in instance_masks(flipped)] == [masks[n].tolist() for n in "DCBA"]


def test_ties_go_to_the_higher_mean_relevance():
    relevance = np.zeros((40, 60))
    low = square(relevance, 10, 10, 9, 10, 0.5)  # 90 px
    high = square(relevance, 10, 35, 11, 10, 0.9)  # 110 px: the same deviation from 100
    candidates = filter_candidates(relevance_candidates(relevance, 0.3)[0], relevance, 20, 200, 0.85, True)
    ranked = rank_candidates(candidates, 100.0)
    assert [c.area for c in ranked] == [110, 90]
    assert rank_candidates(candidates, 100.0, descending=True)[0].area == 110
    label, _ = extract_pseudo_instances(relevance, area_ref=100.0, k=1, ignore_unselected=False, **PARAMS)
    assert np.array_equal(label == 1, high) and not (label[low] > 0).any()


def test_k_scales_with_the_image_size():
    assert instances_per_image(1000, 1000, 20) == 20
    assert instances_per_image(2000, 1000, 20) == 40
    assert instances_per_image(500, 500, 20) == 5
    assert instances_per_image(250, 500, 20) == 3  # 2.5 rounds up
    assert instances_per_image(100, 100, 20) == 1  # at least one
    with pytest.raises(ValueError, match="method.pseudo.k_per_mpx"):
        instances_per_image(100, 100, 0)


def test_top_k_kept_and_ignore_holds_exactly_the_unselected_blobs_dilated(four_squares):
    relevance, masks = four_squares
    label, info = extract_pseudo_instances(relevance, area_ref=100.0, k=2, ignore_dilate=2, **PARAMS)
    assert [m.tolist() for m in instance_masks(label)] == [masks["A"].tolist(), masks["B"].tolist()]
    expected_ignore = within(masks["C"], 2) | within(masks["D"], 2)
    assert np.array_equal(label == IGNORE, expected_ignore)  # the faint square is neither ignore nor instance
    assert info["n_kept"] == 2 and info["ignore_px"] == int(expected_ignore.sum())
    assert set(np.unique(label)) == {0, 1, 2, IGNORE}

    undilated, _ = extract_pseudo_instances(relevance, area_ref=100.0, k=2, ignore_dilate=0, **PARAMS)
    assert np.array_equal(undilated == IGNORE, masks["C"] | masks["D"])
    reference, _ = extract_pseudo_instances(relevance, area_ref=100.0, k=2, ignore_unselected=False, **PARAMS)
    assert not (reference == IGNORE).any() and np.array_equal(reference, np.where(label == IGNORE, 0, label))


def test_ignore_never_overwrites_a_kept_instance():
    relevance = np.zeros((40, 40))
    kept = square(relevance, 10, 10, 10, 10, 1.0)
    square(relevance, 10, 21, 10, 2, 0.9)  # a thin strip one pixel away: area 20 < min_area 30
    label, _ = extract_pseudo_instances(relevance, area_ref=100.0, k=5, **{**PARAMS, "min_area": 30})
    assert np.array_equal(label == 1, kept)
    assert (label == IGNORE).sum() > 0 and not (label[kept] == IGNORE).any()


def test_hull_masks_fill_a_c_shape_and_earlier_ranks_win_overlaps():
    relevance = np.zeros((40, 40))
    outer = square(relevance, 10, 10, 14, 14, 1.0)
    relevance[14:20, 17:24] = 0.0  # notch open to the right: a C of 196 - 42 = 154 px
    inner = square(relevance, 15, 20, 4, 4, 0.7)  # inside the notch, one pixel from the C: hull-covered
    params = {**PARAMS, "min_area": 10, "min_solidity": 0.5}
    c_first, _ = extract_pseudo_instances(relevance, area_ref=154.0, k=2, **params)
    assert np.array_equal(c_first == 1, outer)  # the filled convex hull: the whole square
    assert int(c_first.max()) == 1  # the inner square's hull is all owned by the C: no instance 2
    inner_first, _ = extract_pseudo_instances(relevance, area_ref=16.0, k=2, **params)
    assert np.array_equal(inner_first == 1, inner)
    assert np.array_equal(inner_first == 2, outer & ~inner)


def test_filters_border_area_and_solidity():
    relevance = np.zeros((50, 80))
    ok = square(relevance, 20, 5, 10, 10, 1.0)
    border = square(relevance, 0, 30, 8, 8, 1.0)  # touches row 0
    small = square(relevance, 40, 30, 3, 3, 1.0)  # 9 px < 20
    large = square(relevance, 20, 55, 15, 15, 1.0)  # 225 px > 200
    relevance[20:34, 30:34] = 1.0  # L shape: 14x4 bar + 4x8 foot = 56 + 32 = 88 px, solidity ~ 0.6
    relevance[30:34, 34:42] = 1.0
    components, above = relevance_candidates(relevance, 0.3)
    assert int(components.max()) == 5 and np.array_equal(above, relevance >= 0.3)

    def kept_areas(**overrides):
        kwargs = {"min_area": 20, "max_area": 200, "min_solidity": 0.85, "exclude_border": True, **overrides}
        return sorted(c.area for c in filter_candidates(components, relevance, **kwargs))

    assert kept_areas() == [100]
    assert kept_areas(exclude_border=False) == [64, 100]
    assert kept_areas(min_area=5) == [9, 100]
    assert kept_areas(max_area=300) == [100, 225]
    assert kept_areas(min_solidity=0.5) == [88, 100]
    assert candidate_areas(relevance, **PARAMS) == [100]
    label, _ = extract_pseudo_instances(relevance, area_ref=100.0, k=5, ignore_dilate=0, **PARAMS)
    assert np.array_equal(label == 1, ok) and int(label[label != IGNORE].max()) == 1
    assert np.array_equal(label == IGNORE, above & ~ok)  # every filtered blob is ignore
    assert (label[border] == IGNORE).all() and (label[small] == IGNORE).all() and (label[large] == IGNORE).all()


def test_watershed_splits_touching_discs():
    relevance = np.zeros((40, 50))
    for centre in ((20, 18), (20, 30)):
        rows, cols = draw_disk(centre, 7, shape=relevance.shape)
        relevance[rows, cols] = 1.0
    whole, above = relevance_candidates(relevance, 0.3)
    assert int(whole.max()) == 1
    split, _ = relevance_candidates(relevance, 0.3, split="watershed", min_distance=4)
    assert int(split.max()) == 2 and np.array_equal(split > 0, above)
    assert split[20, 18] != split[20, 30]


def test_reference_area_modes():
    assert reference_area([10, 30, 20], "dataset_median") == 20.0
    assert reference_area([10, 30, 20, 40], "image_median") == 25.0
    assert reference_area([], 600) == 600.0
    for bad in ("mean", -5, 0):
        with pytest.raises(ValueError, match="method.pseudo.area_ref"):
            reference_area([10], bad)
    with pytest.raises(ValueError, match="at least one candidate"):
        reference_area([], "dataset_median")


def test_image_median_and_empty_maps(four_squares):
    relevance, masks = four_squares
    label, info = extract_pseudo_instances(relevance, area_ref="image_median", k=1, **PARAMS)
    assert info["area_ref"] == 82.0 and np.array_equal(label == 1, masks["A"])  # median of 36, 64, 100, 144
    with pytest.raises(ValueError, match="dataset_median"):
        extract_pseudo_instances(relevance, area_ref="dataset_median", k=1, **PARAMS)
    empty, info = extract_pseudo_instances(np.zeros((20, 20)), area_ref="image_median", k=3, **PARAMS)
    assert not empty.any() and info["n_candidates"] == 0


@pytest.mark.parametrize(
    "kwargs, key",
    [({"tau": 0.0}, "method.pseudo.tau"), ({"tau": 1.5}, "method.pseudo.tau"), ({"split": "slic"}, "method.pseudo.split"),
     ({"k": -1}, "k_per_mpx"), ({"ignore_dilate": -1}, "method.pseudo.ignore_dilate"),
     ({"min_area": 300}, "method.pseudo.min_area"), ({"min_solidity": 2.0}, "method.pseudo.min_solidity")],
)
def test_bad_parameters_raise(four_squares, kwargs, key):
    relevance, _ = four_squares
    with pytest.raises(ValueError, match=key):
        extract_pseudo_instances(relevance, **{"area_ref": 100.0, "k": 2, **PARAMS, **kwargs})
