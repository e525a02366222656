"""InstanceSegmentationModule: the contract (one image in, one instance map out) and the tiled instance path."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy import ndimage as ndi
from torch.utils.data import DataLoader

from cellseg.data.datasets import collate_whole_images
from cellseg.methods.dense import DenseSegmentationModule
from cellseg.methods.instance import InstanceSegmentationModule

torch.set_num_threads(1)


class ThresholdDetector(InstanceSegmentationModule):
    """Predicts instances directly from tiles: connected components of channel 0 > 0 (no network)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tile_shapes: list[tuple[int, ...]] = []

    def predict_tile_instances(self, tiles: torch.Tensor) -> list[np.ndarray]:
        self.tile_shapes.append(tuple(tiles.shape))
        return [ndi.label(tile[0].cpu().numpy() > 0)[0] for tile in tiles]


def scene(height: int = 150, width: int = 170, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Squares (some across the tile borders of 64 px tiles with overlap 32) and their instance map."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.int32)
    for number, (row, col) in enumerate([(20, 20), (40, 58), (60, 100), (100, 30), (120, 140), (90, 75)], start=1):
        labels[row : row + 14, col : col + 12] = number
    image = rng.uniform(0.1, 1.0, size=(3, height, width)).astype(np.float32)
    image[0] = np.where(labels > 0, image[0], -1.0)
    return torch.from_numpy(image), labels


def loader(n: int = 3) -> DataLoader:
    items = []
    for k in range(n):
        image, labels = scene(seed=k)
        items.append({"image": image, "label": torch.from_numpy(labels), "id": f"img{k}", "index": k})
    return DataLoader(items, batch_size=2, collate_fn=collate_whole_images)


def trainer(tmp_path) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path))


def same_partition(got: np.ndarray, expected: np.ndarray) -> bool:
    pairs = np.unique(np.stack([got.ravel(), expected.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(got).size == np.unique(expected).size and ((got > 0) == (expected > 0)).all()


def test_predict_instances_stitches_tiles_from_the_inference_settings():
    module = ThresholdDetector(inference={"tile": 64, "overlap": 32, "batch_size": 3})
    image, labels = scene()
    instances = module.predict_instances(image)
    assert instances.dtype == np.int32 and instances.shape == labels.shape
    assert same_partition(instances, labels)
    assert all(shape[0] <= 3 and shape[-2:] == (64, 64) for shape in module.tile_shapes)
    assert len(module.tile_shapes) > 1


def test_validation_test_and_predict_go_through_predict_instances(tmp_path):
    module = ThresholdDetector(inference={"tile": 64, "overlap": 32}, metric_prefix="oracle", log_images=1)
    run = trainer(tmp_path)
    validated = run.validate(module, dataloaders=loader(), verbose=False)[0]
    assert validated["oracle/aji"] == pytest.approx(1.0) and validated["oracle/pq"] == pytest.approx(1.0)
    assert validated["oracle/dice_pooled"] == pytest.approx(1.0)
    assert [p.name for p in (tmp_path / "overlays").rglob("*.png")] == ["img0.png"]  # log_images=1
    tested = run.test(module, dataloaders=loader(), verbose=False)[0]
    assert tested["test/aji"] == pytest.approx(1.0) and "oracle/aji" not in tested
    predicted = [item for batch in run.predict(module, dataloaders=loader()) for item in batch]
    assert [(item["id"], item["index"]) for item in predicted] == [("img0", 0), ("img1", 1), ("img2", 2)]
    for item in predicted:
        assert same_partition(item["instances"], scene(seed=item["index"])[1])


def test_a_module_must_predict_instances_somehow():
    with pytest.raises(NotImplementedError, match="predict_instances .* or predict_tile_instances"):
        InstanceSegmentationModule().predict_instances(torch.zeros(3, 8, 8))


def test_inference_settings_are_checked_and_optimizer_is_required():
    with pytest.raises(ValueError, match="method.module.inference.overlap"):
        ThresholdDetector(inference={"tile": 64, "overlap": 64})
    with pytest.raises(ValueError, match="method.module.inference.cut"):
        ThresholdDetector(inference={"cut": "merge"})
    with pytest.raises(ValueError, match="without an optimizer"):
        ThresholdDetector().configure_optimizers()


class PointwiseDense(DenseSegmentationModule):
    """Dense method on a 1x1 convolution; instances are connected components of p_fg > 0.5."""

    def probabilities_to_instances(self, probs: np.ndarray) -> np.ndarray:
        return ndi.label(probs[1] > 0.5)[0].astype(np.int32)


def make_dense(**inference) -> PointwiseDense:
    torch.manual_seed(0)
    return PointwiseDense(torch.nn.Conv2d(3, 2, 1), optimizer=None,
                          inference={"tile": 64, "overlap": 16, **inference})


def test_dense_module_is_an_instance_module_with_probability_tta():
    module = make_dense()
    assert isinstance(module, InstanceSegmentationModule)
    image, _ = scene()
    plain = module.predict_probabilities(image)
    expected = module(image[None]).softmax(dim=1)[0].detach().numpy()
    np.testing.assert_allclose(plain, expected, atol=1e-6)
    flipped = make_dense(hflip=True).predict_probabilities(image)
    np.testing.assert_allclose(flipped, expected, atol=1e-6)  # a pointwise model is flip-equivariant
    multi = make_dense(scales=[0.5, 1.0]).predict_probabilities(image)
    assert multi.shape == plain.shape and not np.allclose(multi, plain)
    np.testing.assert_array_equal(module.predict_instances(image), module.probabilities_to_instances(plain))
    with pytest.raises(ValueError, match="method.module.inference.scales"):
        make_dense(scales=[])


def test_dense_validation_sees_the_probabilities_once(tmp_path):
    module = make_dense()
    seen = []
    module.validate_probabilities = lambda probs, batch, k: seen.append((batch["id"][k], probs.shape))
    trainer(tmp_path).validate(module, dataloaders=loader(), verbose=False)
    assert [image_id for image_id, _ in seen] == ["img0", "img1", "img2"]
    assert all(shape == (2, 150, 170) for _, shape in seen)
