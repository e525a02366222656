"""Cyclic's glue on hand-made cases: detection targets from pseudo-instance crops, the tile table and dataset, the
held-out split, confident detections of the self-training stage, and which network a stage trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg.data.tiles import Tile, TileDataset, held_out_tiles, read_tile_table, write_tile_table
from cellseg.data.transforms import AugmentConfig
from cellseg.methods.cyclic.detector_module import CyclicDetector
from cellseg.methods.cyclic.targets import detection_target, instance_target
from cellseg.models.cam_classifier import TileClassifier
from cellseg.models.cyclic_networks import CyclicNetworks
from cellseg.models.mask_rcnn import build_mask_rcnn
from cellseg.pipeline.cyclic import confident_instances, detection_masks
from cellseg.utils.ignore import IGNORE_INSTANCE


def test_detection_target_boxes_masks_and_ignore_boxes():
    crop = np.zeros((20, 30), dtype=np.int64)
    crop[2:6, 3:10] = 4          # a 4 x 7 instance
    crop[10, 20] = 9             # one pixel: below min_area, not a target
    crop[12:15, 0:5] = IGNORE_INSTANCE
    crop[18:20, 25:30] = IGNORE_INSTANCE
    target = detection_target(torch.from_numpy(crop), min_area=2)
    assert target["boxes"].tolist() == [[3.0, 2.0, 10.0, 6.0]]  # x0, y0, x1, y1 with exclusive ends
    assert target["labels"].tolist() == [1] and target["masks"].shape == (1, 20, 30)
    assert target["masks"][0].sum() == 28
    assert target["ignore_boxes"].tolist() == [[0.0, 12.0, 5.0, 15.0], [25.0, 18.0, 30.0, 20.0]]


def test_an_empty_crop_and_a_missing_pseudo_label():
    target = detection_target(torch.zeros((8, 8), dtype=torch.int64))
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 8, 8)
    assert (instance_target(None, "instance", (3, 4)) == IGNORE_INSTANCE).all()  # nothing taught there
    with pytest.raises(ValueError, match="instance maps"):
        instance_target(np.zeros((3, 4), np.uint8), "scribble", (3, 4))


def test_tile_table_round_trip_and_a_stable_held_out_split(tmp_path):
    tiles = [Tile(f"img{k % 3}", 8 * k, 4 * k, 32, k % 2) for k in range(200)]
    write_tile_table(tmp_path / "tiles.csv", tiles)
    assert read_tile_table(tmp_path / "tiles.csv") == tiles
    train, held = held_out_tiles(tiles, 0.2, seed=0)
    assert len(train) + len(held) == 200 and 20 < len(held) < 60
    # a tile's side does not depend on the order or on the other tiles
    _, held_reversed = held_out_tiles(tiles[::-1], 0.2, seed=0)
    assert set(held_reversed) == set(held)
    _, held_subset = held_out_tiles(tiles[:100], 0.2, seed=0)
    assert set(held_subset) == {t for t in held if t in tiles[:100]}
    assert held_out_tiles(tiles, 0.0, seed=0)[1] == []


def test_tile_dataset_crops_resizes_and_is_seeded():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[8:24, 40:56] = 255
    tiles = [Tile("a", 40, 8, 16, 1), Tile("a", 0, 32, 16, 0)]
    plain = TileDataset({"a": image}, tiles, input_size=32)
    item = plain[0]
    assert item["image"].shape == (3, 32, 32) and item["label"].item() == 1
    assert torch.allclose(item["image"], item["image"][:, :1, :1].expand(3, 32, 32))  # the white square only
    augmented = TileDataset({"a": image}, tiles, input_size=32, augment=AugmentConfig(affine_p=1.0, scale=0.2))
    assert torch.equal(augmented[(1, 7)]["image"], augmented[(1, 7)]["image"])
    with pytest.raises(ValueError, match="not loaded"):
        TileDataset({}, tiles, input_size=32)


def test_confident_instances_keep_the_best_scores_in_order():
    instances = np.array([[1, 1, 2, 0], [3, 3, 4, 4]])
    scores = {1: 0.97, 2: 0.5, 3: 0.99, 4: 0.96}
    kept = confident_instances(instances, scores, min_score=0.95, cap=2)
    np.testing.assert_array_equal(kept, [[2, 2, 0, 0], [1, 1, 0, 0]])  # ids 1..K by descending score
    masks = detection_masks(kept)
    assert len(masks) == 2 and masks[0].sum() == 2 and masks[0][1, 0]


def test_each_stage_trains_only_its_own_network():
    networks = CyclicNetworks(TileClassifier("resnet18", output_stride=32),
                              build_mask_rcnn("resnet18", rpn_post_nms_test=50))
    networks.train_only("classifier")
    assert all(p.requires_grad for p in networks.classifier.parameters())
    assert not any(p.requires_grad for p in networks.detector.parameters())
    networks.train_only("detector")
    assert not any(p.requires_grad for p in networks.classifier.parameters())
    assert any(p.requires_grad for p in networks.detector.parameters())
    with pytest.raises(ValueError, match="part="):
        networks.train_only("both")


def test_a_higher_score_floor_keeps_exactly_the_detections_above_it():
    torch.manual_seed(0)
    networks = CyclicNetworks(TileClassifier("resnet18", output_stride=32),
                              build_mask_rcnn("resnet18", rpn_post_nms_test=50, detections=50))
    module = CyclicDetector(networks, scale=1.0, inference={"tile": 64, "overlap": 16}).eval()
    image = torch.randn(3, 64, 64)  # one tile (stitching may hand a pixel to a lower-scoring neighbour's instance)
    every_map, every_score = module.predict_scored_instances(image)
    ranked = sorted(every_score.values())
    floor = (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2  # between two scores: no tie at the floor
    module.set_min_score(floor)
    assert module.net.detector.roi_heads.score_thresh == floor
    kept_map, kept_score = module.predict_scored_instances(image)
    assert 0 < len(kept_score) < len(every_score)
    assert sorted(kept_score.values()) == sorted(s for s in every_score.values() if s >= floor)
    for kept_id, score in kept_score.items():  # the same pixels as when every detection was kept
        every_id = next(i for i, s in every_score.items() if s == score)
        np.testing.assert_array_equal(kept_map == kept_id, every_map == every_id)
