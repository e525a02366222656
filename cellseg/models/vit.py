"""timm ViT feature backbone for COIN's `features: vit` (docs/methods/coin.md#vit-features): random init unless a local MAE/FiT3D file."""

from __future__ import annotations

import logging
import os

import timm
import torch
from torch import nn

from cellseg import weights as weights_policy

log = logging.getLogger(__name__)


def build_vit(
    arch: str = "vit_base_patch16_224",
    weights: str | os.PathLike | None = None,
    weights_sha256: str | None = None,
    dynamic_img_size: bool = True,
    **timm_kwargs,
) -> nn.Module:
    """A headless timm ViT (`pretrained=False`) with `weights` loaded through cellseg.weights.

    MAE / FiT3D checkpoints work as given: nested `model` / `state_dict` keys are unwrapped, the MAE decoder and
    mask token dropped, a classifier head ignored, and `pos_embed` resampled to this model's grid.
    `timm_kwargs` reach timm.create_model (e.g. embed_dim/depth/num_heads for small test models).
    """
    timm_kwargs.setdefault("num_classes", 0)
    model = timm.create_model(arch, pretrained=False, dynamic_img_size=dynamic_img_size, **timm_kwargs)
    auto_source = "fit3d_mae_base" if arch == "vit_base_patch16_224" else arch
    report = weights_policy.load(model, weights, weights_sha256, drop_prefixes=("head.",), auto_source=auto_source,
                                 config_key="method.features.weights")
    if not report.applied:
        log.warning("features: vit runs from random initialisation; only useful for plumbing tests")
    return model.eval()


def vit_token_grid(model: nn.Module, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """(B, D, h, w) tokens of block `layer` after the final norm, prefix (CLS, register) tokens dropped.

    `images` are normalised (B, 3, H, W) tensors with H and W multiples of the patch size.
    """
    patch = model.patch_embed.patch_size
    height, width = images.shape[-2:]
    if height % patch[0] or width % patch[1]:
        raise ValueError(f"vit_token_grid: image size {height}x{width} is not a multiple of the patch size {patch}")
    depth = len(model.blocks)
    index = layer + depth if layer < 0 else layer
    if not 0 <= index < depth:
        raise ValueError(f"vit_token_grid: layer {layer} outside the {depth} blocks of the model")
    grids = model.forward_intermediates(
        images, indices=[index], norm=True, stop_early=True, output_fmt="NCHW", intermediates_only=True
    )
    return grids[0]
