"""COIN's stage-3 network (docs/methods/coin.md#network): smp ResNet encoder at output stride 8 + DeepLabV3+ heads built here.

Two identical heads read the same encoder features: segmentation (logits at 1/4 of the input) and, optionally,
edges (logits bilinearly upsampled to the input). `head_impl: smp` swaps in smp's stock decoder (separable
convolutions, one decoder conv) as an ablation.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from cellseg import weights as weights_policy
from cellseg.models.smp_models import encoder_was_loaded

HEAD_IMPLS = ("coin", "smp")
# DeepLab's atrous rates are tied to the output stride (6/12/18 at 16, doubled at 8).
DEFAULT_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
LOW_LEVEL_INDEX = 2  # smp encoder features: [input, stride 2, stride 4 (layer1), stride 8, ...]


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1x1, three dilated 3x3 and image pooling branches (256 ch + BN + ReLU), fused by 1x1 256 + dropout 0.5."""

    def __init__(self, in_ch: int, out_ch: int = 256, rates=(12, 24, 36), dropout: float = 0.5):
        super().__init__()
        branches = [conv_bn_relu(in_ch, out_ch)] + [conv_bn_relu(in_ch, out_ch, 3, r) for r in rates]
        self.branches = nn.ModuleList(branches + [ImagePooling(in_ch, out_ch)])
        self.project = nn.Sequential(conv_bn_relu(out_ch * len(self.branches), out_ch), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class CoinHead(nn.Module):
    """ASPP on the deepest features + decoder on stride-4 features -> logits at 1/4 resolution."""

    def __init__(self, high_ch: int, low_ch: int, classes: int, rates, channels: int = 256):
        super().__init__()
        self.aspp = ASPP(high_ch, channels, rates)
        self.reduce_low = conv_bn_relu(low_ch, 48)
        self.fuse = nn.Sequential(
            conv_bn_relu(channels + 48, channels, 3), nn.Dropout(0.5),
            conv_bn_relu(channels, channels, 3), nn.Dropout(0.1),
        )
        self.classifier = nn.Conv2d(channels, classes, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.reduce_low(features[LOW_LEVEL_INDEX])
        high = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([high, low], dim=1)))


class SmpHead(nn.Module):
    """smp's DeepLabV3+ decoder (separable ASPP, one decoder conv) + a 1x1 classifier, also at 1/4 resolution."""

    def __init__(self, encoder_channels, classes: int, rates, output_stride: int, channels: int = 256):
        super().__init__()
        self.decoder = DeepLabV3PlusDecoder(
            encoder_channels=encoder_channels, encoder_depth=5, out_channels=channels, atrous_rates=rates,
            output_stride=output_stride, aspp_separable=True, aspp_dropout=0.5,
        )
        self.classifier = nn.Conv2d(channels, classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.decoder(features))


class CoinDeepLab(nn.Module):
    """`forward(x) -> {"seg": (B, classes, H/4, W/4), "edge": (B, 2, H, W)}` (no "edge" without the edge head)."""

    def __init__(
        self,
        encoder: str = "resnet101",
        in_channels: int = 3,
        classes: int = 2,
        output_stride: int = 8,
        head_impl: str = "coin",
        edge_head: bool = True,
        edge_classes: int = 2,
        atrous_rates: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        if output_stride not in DEFAULT_RATES:
            raise ValueError(f"model.output_stride must be 8 or 16, got {output_stride}")
        if head_impl not in HEAD_IMPLS:
            raise ValueError(f"model.head_impl must be one of {HEAD_IMPLS}, got '{head_impl}'")
        self.encoder = get_encoder(encoder, in_channels=in_channels, depth=5, weights=None, output_stride=output_stride)
        rates = tuple(atrous_rates) if atrous_rates is not None else DEFAULT_RATES[output_stride]
        channels = self.encoder.out_channels

        def make_head(n_classes: int) -> nn.Module:
            if head_impl == "smp":
                return SmpHead(channels, n_classes, rates, output_stride)
            return CoinHead(channels[-1], channels[LOW_LEVEL_INDEX], n_classes, rates)

        self.seg_head = make_head(classes)
        self.edge_head = make_head(edge_classes) if edge_head else None
        self.encoder_pretrained = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(x)
        out = {"seg": self.seg_head(features)}
        if self.edge_head is not None:
            edge = self.edge_head(features)
            out["edge"] = F.interpolate(edge, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def build_coin_deeplab(
    encoder: str = "resnet101",
    in_channels: int = 3,
    classes: int = 2,
    output_stride: int = 8,
    head_impl: str = "coin",
    edge_head: bool = True,
    atrous_rates: tuple[int, int, int] | None = None,
    weights: str | os.PathLike | None = None,
    weights_sha256: str | None = None,
    weights_scope: str = "encoder",
    weights_prefix_map: dict[str, str] | None = None,
) -> CoinDeepLab:
    """CoinDeepLab from random init; `weights` (torchvision ResNet names for `encoder` scope) loaded after."""
    if weights_scope not in ("full", "encoder"):
        raise ValueError(f"model.weights_scope must be 'full' or 'encoder', got '{weights_scope}'")
    model = CoinDeepLab(encoder, in_channels, classes, output_stride, head_impl, edge_head, atrous_rates=atrous_rates)
    is_auto = isinstance(weights, str) and weights.strip().lower() == "auto"
    scope = "encoder" if weights_scope == "encoder" or is_auto else None
    report = weights_policy.load(model, weights, weights_sha256, scope=scope, auto_source=encoder,
                                 prefix_map=weights_prefix_map, config_key="model.weights")
    model.encoder_pretrained = encoder_was_loaded(report, scope)
    return model


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float | str = "auto") -> list[dict]:
    """Two SGD groups: the encoder at lr * mult, everything else (heads) at lr.

    `auto` = 0.1 when encoder weights were loaded (the faithful ImageNet setting), 1.0 from random init.
    """
    if backbone_lr_mult == "auto":
        backbone_lr_mult = 0.1 if getattr(model, "encoder_pretrained", False) else 1.0
    backbone_ids = {id(p) for p in model.encoder.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = [p for p in trainable if id(p) in backbone_ids]
    heads = [p for p in trainable if id(p) not in backbone_ids]
    return [
        {"params": backbone, "lr": lr * float(backbone_lr_mult), "name": "backbone"},
        {"params": heads, "lr": lr, "name": "heads"},
    ]
