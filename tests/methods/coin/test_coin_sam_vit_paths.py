"""The weight-backed COIN paths through the user's config keys: ViT features (method.features.weights) and the
SAM prompter (method.prompter.weights), each with a tiny random model saved to a checkpoint file."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import segment_anything
import torch
import torch.nn.functional as F
from coin_pipeline_synth import compose_coin, make_dataset
from segment_anything.build_sam import _build_sam
from timm.models.vision_transformer import VisionTransformer

import cellseg.models.sam as sam_models
import cellseg.models.vit as vit_models
from cellseg.methods.coin.prompter import interior_point, load_prompts
from cellseg.methods.coin.vit_features import VitFeatureExtractor, window_origins
from cellseg.pipeline.coin import CoinPipeline
from cellseg.utils.io import read_image, read_label

torch.set_num_threads(1)
TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)
build_tiny_sam = partial(_build_sam, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=1,
                         encoder_global_attn_indexes=[0])


@pytest.fixture
def data_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "data", n_train=2, n_test=1, size=64)


@pytest.mark.parametrize("size", [1000, 512, 256])
def test_zoom_6_gives_81_windows_covering_the_image(size):
    side, origins = window_origins(size, size, 6)
    assert side == size // 6 and len(origins) == 81
    rows = sorted({r for r, _ in origins})
    assert rows[0] == 0 and rows[-1] == size - side and all(b - a <= (2 * side) // 3 for a, b in zip(rows, rows[1:], strict=False))


def test_blockwise_features_equal_the_full_buffer():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=224, patch_size=16, num_classes=0, dynamic_img_size=True, **TINY_VIT)
    extractor = VitFeatureExtractor(model, zooms=(6,), hflip=False, layer=-1, block=96)
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    tokens = extractor.window_tokens(image, 6)
    assert tokens.grids.dtype == torch.float16 and tokens.grids.shape == (81, 32, 16, 16)  # 42 * 6 = 252 -> 256
    blockwise = np.zeros((32, 256, 256), dtype=np.float32)
    for rows, cols, feats in extractor.blocks(tokens):
        assert feats.shape[1] <= 96 and feats.shape[2] <= 96
        blockwise[:, rows, cols] = feats
    total, count = torch.zeros(32, 256, 256), torch.zeros(256, 256)  # naive: every window upsampled whole
    for (r, c), grid in zip(tokens.origins, tokens.grids, strict=True):
        up = F.interpolate(grid.float()[None], size=(tokens.side, tokens.side), mode="bilinear", align_corners=False)
        total[:, r:r + tokens.side, c:c + tokens.side] += up[0]
        count[r:r + tokens.side, c:c + tokens.side] += 1
    naive = F.normalize(total / count, dim=0).numpy()
    assert np.abs(blockwise - naive).max() < 1e-4


def test_vit_features_from_a_checkpoint_through_the_config(tmp_path, data_root, monkeypatch):
    torch.manual_seed(1)
    source = VisionTransformer(img_size=64, patch_size=16, num_classes=0, **TINY_VIT)
    weights = tmp_path / "vit_tiny.pth"
    torch.save({"model": source.state_dict()}, weights)
    built = []
    original = vit_models.build_vit
    monkeypatch.setattr(vit_models, "build_vit", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    cfg = compose_coin(
        tmp_path, "method/features=vit", f"method.features.weights={weights}",
        "method.features.arch=vit_tiny_patch16_224", "method.features.timm_kwargs={embed_dim:32,depth:2,num_heads:2}",
        "method.features.layer=-1", "method.features.zooms=[2]", "method.features.hflip=false",
        "method.features.block=40", "method.features.cache=tokens", "method.rounds=0", data_root=data_root,
    )
    stage = CoinPipeline(cfg).propagate()
    assert len(built) == 1
    for key, value in source.state_dict().items():
        if key != "pos_embed":  # resampled from the 4 x 4 grid of the file to the model's 14 x 14
            assert torch.equal(built[0].state_dict()[key], value), key
    assert sorted(p.name for p in (stage.dir / "tokens").iterdir()) == ["train0.pt", "train1.pt"]
    for image_id in ("train0", "train1"):
        mask = read_label(stage.dir / "masks" / f"{image_id}.png")
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}


@pytest.fixture
def tiny_sam_checkpoint(tmp_path, monkeypatch) -> Path:
    monkeypatch.setitem(segment_anything.sam_model_registry, "tiny_test", build_tiny_sam)
    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


def test_sam_prompter_from_a_checkpoint_through_the_config(tmp_path, data_root, tiny_sam_checkpoint, monkeypatch):
    calls = []
    original = sam_models.iter_masks_for_points
    monkeypatch.setattr(sam_models, "iter_masks_for_points", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    cfg = compose_coin(tmp_path, "method/prompter=sam", "method.prompter.model_type=tiny_test",
                       f"method.prompter.weights={tiny_sam_checkpoint}", "method.prompter.prompt_batch=2",
                       "method.rounds=0", data_root=data_root)
    stage = CoinPipeline(cfg).pseudo_labels(0)
    assert len(calls) == 2  # one set_image per training image
    predictor = sam_models.build_sam_predictor("tiny_test", tiny_sam_checkpoint)
    image_id = "train0"
    instances = read_label(stage.dir / "instances" / f"{image_id}.png")
    prompts = load_prompts(stage.dir / "prompts" / f"{image_id}.npz")
    ids = [i for i in range(1, instances.max() + 1) if (instances == i).any()]
    assert [p.instance_id for p in prompts] == ids and ids
    points = [interior_point(instances == i) for i in ids]
    masks, _ = sam_models.predict_masks_for_points(
        predictor, read_image(data_root / "Synth" / "train" / "images" / f"{image_id}.png"),
        np.array([(c, r) for r, c in points], dtype=np.float32))
    for prompt, expected in zip(prompts, masks, strict=True):
        assert (prompt.to_full(instances.shape) == expected).mean() > 0.999
    label = read_label(stage.dir / "labels" / f"{image_id}.png")
    assert label.shape == instances.shape and label.max() <= 65535
