"""SAM prompter: local-checkpoint build through sam_model_registry, batched point prompts, best-IoU choice.

segment-anything's real models are far too big for CPU tests, so a tiny Sam (1 encoder block, width 32) built by
segment-anything's own `_build_sam` is registered under `tiny_test` for the duration of a test; the user path
`sam_model_registry[type](checkpoint=path)` is then exercised unchanged.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import segment_anything
import torch
from segment_anything.build_sam import _build_sam
from segment_anything.utils.transforms import ResizeLongestSide

from cellseg.models.sam import build_sam_predictor, iter_masks_for_points, predict_masks_for_points
from cellseg.utils.hashing import sha256_file

torch.set_num_threads(1)
build_tiny_sam = partial(
    _build_sam, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=1, encoder_global_attn_indexes=[0]
)


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(segment_anything.sam_model_registry, "tiny_test", build_tiny_sam)
    torch.manual_seed(0)
    state = build_tiny_sam().state_dict()
    path = tmp_path / "sam_tiny.pth"
    torch.save(state, path)
    return path, state


def test_missing_weights_suggest_classical():
    with pytest.raises(ValueError, match="prompter: classical"):
        build_sam_predictor("vit_b", weights=None)


def test_missing_file_and_unknown_type(tmp_path, tiny_checkpoint):
    with pytest.raises(FileNotFoundError, match="method.prompter.weights"):
        build_sam_predictor("tiny_test", weights=tmp_path / "absent.pth")
    path, _ = tiny_checkpoint
    with pytest.raises(ValueError, match="model_type"):
        build_sam_predictor("vit_q", weights=path)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        build_sam_predictor("tiny_test", weights=path, weights_sha256="0" * 64)


def test_auto_refused_offline(monkeypatch):
    monkeypatch.setenv("CELLSEG_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="CELLSEG_OFFLINE"):
        build_sam_predictor("vit_b", weights="auto")


def test_tiny_sam_batched_points(tiny_checkpoint):
    path, state = tiny_checkpoint
    predictor = build_sam_predictor("tiny_test", weights=path, weights_sha256=sha256_file(path))
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, state[key]), key

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    points = np.array([[5, 7], [50, 30], [20, 20], [55, 39], [0, 0]], dtype=np.float32)  # (x, y)
    masks, ious = predict_masks_for_points(predictor, image, points, batch=2)  # 3 chunks
    assert masks.shape == (5, 40, 56) and masks.dtype == bool
    assert ious.shape == (5,) and ious.dtype == np.float32

    # independent reference: all points in one predict_torch call, best of the 3 masks by predicted IoU
    coords = predictor.transform.apply_coords_torch(torch.as_tensor(points)[:, None, :], image.shape[:2])
    all_masks, all_ious, _ = predictor.predict_torch(coords, torch.ones(5, 1), multimask_output=True)
    best = all_ious.argmax(dim=1)
    expected_masks = all_masks[torch.arange(5), best].numpy()
    np.testing.assert_allclose(ious, all_ious.max(dim=1).values.numpy(), rtol=1e-4, atol=1e-5)
    assert (masks == expected_masks).mean() > 0.999


class FakePredictor:
    """Stands in for SamPredictor: mask k of point i is filled with value i*10+k, IoUs chosen per point."""

    def __init__(self, best_index):
        self.best_index = best_index
        self.transform = ResizeLongestSide(64)
        self.device = torch.device("cpu")
        self.set_image_calls = 0
        self.batch_sizes = []

    def set_image(self, image, image_format="RGB"):
        self.set_image_calls += 1
        self.size = image.shape[:2]

    def predict_torch(self, coords, labels, multimask_output=True):
        assert multimask_output and coords.shape[1:] == (1, 2) and labels.shape == coords.shape[:2]
        n = coords.shape[0]
        self.batch_sizes.append(n)
        # recover the point index from its x coordinate (points are (i, 0) scaled by the transform)
        scale = 64 / max(self.size)
        index = torch.round(coords[:, 0, 0] / scale).long()
        masks = torch.zeros(n, 3, *self.size, dtype=torch.bool)
        ious = torch.full((n, 3), 0.1)
        for row, i in enumerate(index.tolist()):
            masks[row, self.best_index[i], : i + 1] = True  # the best mask has i+1 rows set
            ious[row, self.best_index[i]] = 0.9
        return masks, ious, None


def test_highest_iou_mask_is_kept_and_chunked():
    best_index = [2, 0, 1, 2, 1, 0, 2]
    fake = FakePredictor(best_index)
    image = np.zeros((16, 16), dtype=np.uint8)  # grey, replicated to RGB
    points = np.stack([np.arange(7), np.zeros(7)], axis=1)
    masks, ious = predict_masks_for_points(fake, image, points, batch=3)
    assert fake.set_image_calls == 1 and fake.batch_sizes == [3, 3, 1]
    np.testing.assert_allclose(ious, 0.9)
    for i in range(7):
        assert masks[i].sum() == (i + 1) * 16, i


def test_generator_and_empty_points():
    fake = FakePredictor([0, 1, 2])
    chunks = list(iter_masks_for_points(fake, np.zeros((8, 8, 3), np.uint8), np.array([[0, 0], [1, 0], [2, 0]]), 2))
    assert [c[0] for c in chunks] == [slice(0, 2), slice(2, 3)]
    masks, ious = predict_masks_for_points(fake, np.zeros((8, 8, 3), np.uint8), np.zeros((0, 2)))
    assert masks.shape == (0, 8, 8) and ious.shape == (0,)
    with pytest.raises(ValueError, match="RGB uint8"):  # an unconverted 16-bit image
        predict_masks_for_points(fake, np.zeros((8, 8, 3), np.uint16), np.zeros((1, 2)))
    # a float image in [0, 1] (deeper than 8 bits, cellseg/data/intensity.py) is rounded to 8 bits
    masks, _ = predict_masks_for_points(fake, np.zeros((8, 8, 3), np.float32), np.zeros((1, 2)))
    assert masks.shape == (1, 8, 8)
