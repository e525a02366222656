"""Model builders: smp U-Net / DeepLabV3+, COIN's DeepLabV3+ with an edge head, timm ViT features, SAM prompter.

Heavy optional pieces (timm ViT, segment-anything) are imported by their own modules only.
"""

from __future__ import annotations

from cellseg.models.deeplab_coin import CoinDeepLab, build_coin_deeplab, param_groups
from cellseg.models.smp_models import build_segmentation_model

__all__ = ["CoinDeepLab", "build_coin_deeplab", "build_segmentation_model", "param_groups"]
