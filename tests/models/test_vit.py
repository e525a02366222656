"""timm ViT features: MAE-style checkpoints through the user path, token grids per block."""

from __future__ import annotations

import pytest
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from cellseg.models.vit import build_vit, vit_token_grid

torch.set_num_threads(1)
TINY = dict(embed_dim=32, depth=2, num_heads=2)


def tiny_vit(**kwargs):
    return build_vit("vit_tiny_patch16_224", **TINY, **kwargs)


def write_mae_checkpoint(path):
    """A MAE-like training checkpoint: nested `model`, decoder + mask token, a 4x4 grid instead of 14x14."""
    torch.manual_seed(0)
    source = VisionTransformer(img_size=64, patch_size=16, num_classes=0, **TINY)
    state = dict(source.state_dict())
    state["mask_token"] = torch.zeros(1, 1, 32)
    state["decoder_embed.weight"] = torch.zeros(16, 32)
    state["decoder_pos_embed"] = torch.zeros(1, 17, 16)
    torch.save({"model": state, "epoch": 799}, path)
    return source


def test_mae_checkpoint_loads(tmp_path, caplog):
    path = tmp_path / "mae_tiny.pth"
    source = write_mae_checkpoint(path)
    with caplog.at_level("INFO", logger="cellseg"):
        model = tiny_vit(weights=str(path))
    assert "dropped 3 known extra keys" in caplog.text and "unexpected" not in caplog.text
    assert "missing" not in caplog.text and "random initialisation" not in caplog.text
    target = model.state_dict()
    assert target["pos_embed"].shape == (1, 1 + 14 * 14, 32)
    expected_pos = resample_abs_pos_embed(source.pos_embed.detach(), new_size=[14, 14], num_prefix_tokens=1)
    assert torch.allclose(target["pos_embed"], expected_pos)
    assert torch.equal(target["pos_embed"][:, 0], source.pos_embed[:, 0].detach())  # CLS position kept
    for key, value in source.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(target[key], value), key


def test_random_init_warns(caplog):
    with caplog.at_level("WARNING", logger="cellseg.models.vit"):
        tiny_vit()
    assert "random initialisation" in caplog.text


@pytest.mark.parametrize("layer", [-1, 0])
def test_token_grid(layer):
    model = tiny_vit()
    images = torch.randn(2, 3, 48, 64)
    grid = vit_token_grid(model, images, layer=layer)
    assert grid.shape == (2, 32, 3, 4)
    with torch.no_grad():  # independent path: run the blocks by hand
        tokens = model._pos_embed(model.patch_embed(images))
        for block in model.blocks[: (layer % len(model.blocks)) + 1]:
            tokens = block(tokens)
        tokens = model.norm(tokens)[:, model.num_prefix_tokens:]
    expected = tokens.reshape(2, 3, 4, 32).permute(0, 3, 1, 2)
    assert torch.allclose(grid, expected, atol=1e-5)


def test_token_grid_layer_matters_and_bad_input():
    model = tiny_vit()
    images = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(vit_token_grid(model, images, 0), vit_token_grid(model, images, 1))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit_token_grid(model, torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match="layer"):
        vit_token_grid(model, images, layer=5)
