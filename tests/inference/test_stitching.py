"""Tiled instance prediction: the stitched map equals the untiled one (as a partition) for a local detector.

Hand-built scenes (stardist style): discs and squares straddling tile borders, overlaps and tile corners; the
"detector" is exact (connected components of channel 0, or the ids written into channel 1), so any difference
from the untiled prediction is the stitching's fault.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import cellseg.inference.stitching as stitching
from cellseg.inference.stitching import owned_regions, predict_tiled_instances, relabel_raster
from cellseg.inference.tiler import tile_grid

torch.set_num_threads(1)


# ----- scenes and detectors ----------------------------------------------------------------------------------
def scene(height: int, width: int, objects: list[tuple[str, int, int, int]]) -> tuple[torch.Tensor, np.ndarray]:
    """(2, H, W) image (channel 0 foreground, channel 1 the instance id) and the instance map of `objects`,
    each (kind, centre row, centre col, size): 'disc' of diameter size or 'square' of side size."""
    labels = np.zeros((height, width), dtype=np.int32)
    rows, cols = np.mgrid[:height, :width]
    for number, (kind, row, col, size) in enumerate(objects, start=1):
        if kind == "disc":
            mask = (rows - row) ** 2 + (cols - col) ** 2 <= ((size - 1) / 2) ** 2
        else:
            top, left = row - size // 2, col - size // 2
            mask = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
        assert not (labels[mask] > 0).any(), f"object {number} overlaps another"
        labels[mask] = number
    image = torch.from_numpy(np.stack([labels > 0, labels]).astype(np.float32))
    return image, labels


def components(batch: torch.Tensor) -> list[np.ndarray]:
    """Detector: 8-connected components of channel 0 > 0.5 of each tile."""
    return [ndi.label(tile[0].numpy() > 0.5, structure=np.ones((3, 3)))[0] for tile in batch]


def written_ids(batch: torch.Tensor) -> torch.Tensor:
    """Detector: the ids of channel 1 (touching and non-convex instances), scrambled per tile by an offset."""
    ids = batch[:, 1].round().long()
    return torch.where(ids > 0, ids + 1000 * torch.arange(1, len(batch) + 1)[:, None, None], 0)


def assert_same_partition(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to relabelling: the same background and the same sets of pixels per instance."""
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got > 0, expected > 0)
    pairs = np.unique(np.stack([got.ravel(), expected.ravel()]), axis=1)
    assert pairs.shape[1] == np.unique(got).size == np.unique(expected).size, "instances split or merged"


def assert_raster_labels(labels: np.ndarray) -> None:
    """1..N, numbered in raster order of first pixels."""
    values, first = np.unique(labels.ravel(), return_index=True)
    values, first = values[values > 0], first[values > 0]
    np.testing.assert_array_equal(values, np.arange(1, values.size + 1))
    assert (np.diff(first) > 0).all()


# Tiles of 64 px with overlap 32 start at 0, 32, 64, ...; neighbouring owned regions meet at 48, 80, 112, ...
BORDER_SCENE = [
    ("disc", 48, 48, 25),     # anchor on a corner of four owned regions
    ("square", 64, 100, 20),  # straddles a tile border (row 64) and an owned border (col 112 is not reached)
    ("disc", 20, 63, 23),     # cut by the border of tile col 0 at col 63
    ("square", 46, 140, 20),  # wholly inside the overlap of tiles rows 0 and 32 (rows 36..55 within 32..63)
    ("disc", 112, 112, 21),   # anchor on an owned corner
    ("square", 95, 30, 24),   # straddles rows 64 and 96 borders
    ("disc", 150, 190, 25),
    ("square", 180, 60, 17),  # near the flush last tile of rows
    ("disc", 5, 5, 9),        # touches the image corner
    ("square", 195, 224, 10),  # touches the bottom-right image border
]


@pytest.mark.parametrize("detector", [components, written_ids])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_stitched_equals_untiled_with_instances_on_borders_and_corners(detector, batch_size):
    image, truth = scene(200, 230, BORDER_SCENE)
    untiled = np.asarray(detector(image[None])[0])
    assert_same_partition(untiled, truth)
    stitched = predict_tiled_instances(detector, image, tile=64, overlap=32, batch_size=batch_size, cut="raise")
    assert stitched.dtype == np.int32
    assert_same_partition(stitched, truth)
    assert_raster_labels(stitched)


@pytest.mark.parametrize("size", [13, 14])
def test_an_overlap_of_the_extent_plus_one_is_exact_at_every_position_and_one_less_is_not(size):
    """A square of side D swept over the tile borders (49, 64) and the owned border (56) of both axes (tiles of
    64 px at 0, 49|51, 56): overlap = D + 1 always suffices; with overlap = D a position exists where the tile
    owning the square cuts it."""
    for row in range(44, 70, 5):
        for col in range(44, 70):
            image, truth = scene(120, 120, [("square", row, col, size)])
            stitched = predict_tiled_instances(written_ids, image, tile=64, overlap=size + 1, cut="raise")
            assert_same_partition(stitched, truth)
    image, _ = scene(120, 120, [("square", 47, 57, size)])
    with pytest.raises(ValueError, match="cut by a border of the tile that owns it"):
        predict_tiled_instances(written_ids, image, tile=64, overlap=size, cut="raise")


def test_non_convex_and_touching_instances():
    """An L-shape around a tile corner and two touching rectangles cut by a border (ids from channel 1)."""
    labels = np.zeros((130, 130), dtype=np.int32)
    labels[40:62, 40:46] = 1
    labels[56:62, 40:62] = 1           # L-shape: extent 22 around the corner (48, 48) of owned regions
    labels[70:80, 50:66] = 2
    labels[70:80, 66:80] = 3           # touches 2 along col 66, both cut by the tile border at col 64
    image = torch.from_numpy(np.stack([labels > 0, labels]).astype(np.float32))
    stitched = predict_tiled_instances(written_ids, image, tile=64, overlap=32, cut="raise")
    assert_same_partition(stitched, labels)


def test_an_instance_seen_differently_by_two_tiles_is_kept_once():
    """Tiles disagree on the shape (odd tiles dilate every instance): each object still comes out exactly once,
    as the version of the tile that owns it, never as a union or with a leftover ring."""
    image, truth = scene(200, 230, BORDER_SCENE)
    calls = []

    def disagreeing(batch: torch.Tensor) -> list[np.ndarray]:
        maps = []
        for tile in batch:
            labels = ndi.label(tile[0].numpy() > 0.5, structure=np.ones((3, 3)))[0]
            if len(calls) % 2:
                labels = ndi.grey_dilation(labels, size=(3, 3))
            calls.append(len(calls))
            maps.append(labels)
        return maps

    stitched = predict_tiled_instances(disagreeing, image, tile=64, overlap=32, cut="raise")
    assert np.unique(stitched).size - 1 == len(BORDER_SCENE)
    for number in range(1, len(BORDER_SCENE) + 1):
        ids = np.unique(stitched[truth == number])
        assert ids.size == 1 and ids[0] > 0  # one instance covers the object
        mask = stitched == ids[0]
        dilated = ndi.binary_dilation(truth == number, structure=np.ones((3, 3)))
        assert (mask == (truth == number)).all() or (mask == dilated).all()


def test_each_object_is_pasted_once(monkeypatch):
    pasted = []
    paste = stitching.paste_instance
    monkeypatch.setattr(stitching, "paste_instance", lambda *args: (pasted.append(args[3]), paste(*args)))
    image, _ = scene(200, 230, BORDER_SCENE)
    predict_tiled_instances(components, image, tile=64, overlap=32)
    assert len(pasted) == len(BORDER_SCENE)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (40, 50), (64, 64), (30, 200)])
def test_image_smaller_than_a_tile_is_predicted_whole(height, width):
    objects = [("disc", height // 2, width // 2, min(height, width, 15))] if min(height, width) > 2 else []
    objects += [("square", 3, width - 4, 6)] if min(height, width) > 10 else []
    image, truth = scene(height, width, objects)
    seen = []

    def detector(batch: torch.Tensor) -> list[np.ndarray]:
        seen.append(tuple(batch.shape))
        return components(batch)

    stitched = predict_tiled_instances(detector, image, tile=64, overlap=16)
    assert_same_partition(stitched, truth)  # mirrored objects of the reflect padding are cropped away
    assert all(shape[-2] % 32 == 0 and shape[-1] % 32 == 0 for shape in seen)
    assert len(seen) == len(tile_grid(height, width, 64, 16).origins)


# ----- overlap smaller than the objects ------------------------------------------------------------------------
def big_square_scene():
    """A 40 x 40 square across the tile border at col 64 (tiles of 64 px at cols 0, 56, ...: overlap 8)."""
    return scene(120, 120, [("square", 30, 60, 40), ("disc", 90, 90, 7)])


def test_too_small_overlap_keep_splits_the_object_but_loses_no_pixel():
    image, truth = big_square_scene()
    stitched = predict_tiled_instances(components, image, tile=64, overlap=8, cut="keep")
    np.testing.assert_array_equal(stitched > 0, truth > 0)  # here nothing is lost, nothing added
    pieces = np.unique(stitched[truth == 1])
    assert pieces.size == 2  # cut in both tiles: the owned part of each, second one on the free pixels only
    assert_same_partition(stitched * (truth == 2), (truth == 2).astype(int))  # small objects stay exact
    assert_raster_labels(stitched)


def test_too_small_overlap_drop_leaves_the_object_out_and_raise_refuses():
    image, truth = big_square_scene()
    dropped = predict_tiled_instances(components, image, tile=64, overlap=8, cut="drop")
    assert not dropped[truth == 1].any() and (dropped[truth == 2] > 0).all()
    with pytest.raises(ValueError, match=r"cut by a border of the tile.*overlap=8.*extent \+ 1"):
        predict_tiled_instances(components, image, tile=64, overlap=8, cut="raise")
    # with a large enough overlap all three agree
    results = [predict_tiled_instances(components, image, tile=64, overlap=42, cut=c) for c in stitching.CUT_MODES]
    for result in results:
        assert_same_partition(result, truth)


# ----- pieces ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width", "tile", "overlap"),
                         [(1, 1, 64, 16), (64, 64, 64, 16), (97, 131, 64, 16), (300, 257, 64, 40), (600, 530, 512, 128)])
def test_owned_regions_partition_the_image_and_lie_inside_their_tiles(height, width, tile, overlap):
    grid = tile_grid(height, width, tile, overlap)
    count = np.zeros((height, width), dtype=int)
    for (rows, cols), (tile_rows, tile_cols) in zip(owned_regions(grid), grid.windows(), strict=True):
        assert rows.start < rows.stop and cols.start < cols.stop
        assert tile_rows.start <= rows.start and rows.stop <= min(tile_rows.stop, height)
        assert tile_cols.start <= cols.start and cols.stop <= min(tile_cols.stop, width)
        count[rows, cols] += 1
    assert (count == 1).all()


def test_relabel_raster():
    labels = np.array([[0, 7, 7], [3, 0, 9], [3, 9, 9]], dtype=np.uint16)
    np.testing.assert_array_equal(relabel_raster(labels), [[0, 1, 1], [2, 0, 3], [2, 3, 3]])
    assert relabel_raster(np.full((2, 2), 5)).tolist() == [[1, 1], [1, 1]]
    assert relabel_raster(np.array([[5, 0], [0, 2]])).tolist() == [[1, 0], [0, 2]]  # an instance comes first
    assert relabel_raster(np.zeros((2, 3), dtype=np.int64)).dtype == np.int32


def test_arguments_are_checked():
    image, _ = scene(40, 40, [("disc", 20, 20, 9)])
    with pytest.raises(ValueError, match="multiple of pad_multiple"):
        predict_tiled_instances(components, image, tile=50, overlap=16)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled_instances(components, image, tile=64, overlap=64)
    with pytest.raises(ValueError, match="batch_size"):
        predict_tiled_instances(components, image, tile=64, overlap=16, batch_size=0)
    with pytest.raises(ValueError, match="cut="):
        predict_tiled_instances(components, image, tile=64, overlap=16, cut="merge")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        predict_tiled_instances(components, image[0], tile=64, overlap=16)
    with pytest.raises(ValueError, match="predict_fn returned"):
        predict_tiled_instances(lambda b: [m[:-1] for m in components(b)], image, tile=64, overlap=16)
    with pytest.raises(ValueError, match="integer values >= 0"):
        predict_tiled_instances(lambda b: b[:, 0], image, tile=64, overlap=16)  # probabilities, not instances
    with pytest.raises(ValueError, match="predict_fn returned"):
        predict_tiled_instances(lambda b: components(b)[:0], image, tile=64, overlap=16)


def test_numpy_image_and_tensor_outputs():
    image, truth = scene(100, 90, [("disc", 50, 45, 21), ("square", 10, 80, 8)])
    as_tensor = predict_tiled_instances(lambda b: torch.from_numpy(np.stack(components(b))), image.numpy(),
                                        tile=64, overlap=32, batch_size=2)
    assert_same_partition(as_tensor, truth)


def test_scores_travel_with_their_instances_through_stitching():
    """A detector's {label: score} per tile comes back keyed by the stitched ids: each instance keeps the score
    its owning tile gave it (here the object's true id / 100, so the expected value is known per object)."""
    image, truth = scene(200, 230, BORDER_SCENE)

    def scored(batch: torch.Tensor):
        maps = written_ids(batch)
        scores = [{int(v): (int(v) % 1000) / 100 for v in np.unique(m.numpy()) if v > 0} for m in maps]
        return maps, scores

    stitched, scores = predict_tiled_instances(scored, image, tile=64, overlap=32, cut="raise", with_scores=True)
    assert_same_partition(stitched, truth)
    assert sorted(scores) == list(range(1, len(BORDER_SCENE) + 1))
    for instance_id, score in scores.items():
        true_ids = np.unique(truth[stitched == instance_id])
        assert true_ids.size == 1 and score == pytest.approx(true_ids[0] / 100)
    plain = predict_tiled_instances(written_ids, image, tile=64, overlap=32, cut="raise")
    np.testing.assert_array_equal(plain, stitched)
