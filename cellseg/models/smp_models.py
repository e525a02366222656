"""segmentation-models-pytorch builders (U-Net, DeepLabV3+), never downloading: weights go through cellseg.weights."""

from __future__ import annotations

import os
from collections.abc import Sequence

import segmentation_models_pytorch as smp
from torch import nn

from cellseg import weights as weights_policy

ARCHS = ("unet", "deeplabv3plus")
WEIGHTS_SCOPES = ("full", "encoder")


def build_segmentation_model(
    arch: str = "unet",
    encoder: str = "resnet34",
    in_channels: int = 3,
    classes: int = 2,
    decoder_attention_type: str | None = None,
    decoder_channels: Sequence[int] | int | None = None,
    encoder_output_stride: int = 16,
    encoder_depth: int = 5,
    weights: str | os.PathLike | None = None,
    weights_sha256: str | None = None,
    weights_scope: str = "full",
    weights_prefix_map: dict[str, str] | None = None,
    encoder_kwargs: dict | None = None,
) -> nn.Module:
    """An smp model from random init, then `weights` loaded into the whole model or only its encoder.

    `weights_scope: encoder` takes torchvision ResNet key names (smp's ResNet encoders use them; `fc.*` dropped);
    `weights: auto` fetches the torchvision ImageNet weights of the encoder (encoder scope).
    `encoder_kwargs` go to the timm model of a `tu-` encoder, e.g. `aa_layer` (an anti-aliasing class such as
    `timm.layers.BlurPool2d`: blur before every stride-2 step; its measured effect on shift stability is in
    docs/framework.md#shift-sensitivity).
    """
    arch = arch.lower()
    if arch not in ARCHS:
        raise ValueError(f"model.arch must be one of {ARCHS}, got '{arch}'")
    if weights_scope not in WEIGHTS_SCOPES:
        raise ValueError(f"model.weights_scope must be one of {WEIGHTS_SCOPES}, got '{weights_scope}'")
    if encoder_kwargs and not encoder.startswith("tu-"):
        raise ValueError(f"model.encoder_kwargs {sorted(encoder_kwargs)} need a timm encoder ('tu-<name>'); "
                         f"model.encoder is '{encoder}'")
    common = dict(encoder_name=encoder, encoder_weights=None, encoder_depth=encoder_depth,
                  in_channels=in_channels, classes=classes, **(encoder_kwargs or {}))
    if arch == "unet":
        channels = tuple(decoder_channels) if decoder_channels is not None else (256, 128, 64, 32, 16)[:encoder_depth]
        model = smp.Unet(decoder_channels=channels, decoder_attention_type=decoder_attention_type, **common)
    else:
        if decoder_attention_type is not None:
            raise ValueError("model.decoder_attention_type is a U-Net option; deeplabv3plus takes none")
        channels = int(decoder_channels) if decoder_channels is not None else 256
        model = smp.DeepLabV3Plus(decoder_channels=channels, encoder_output_stride=encoder_output_stride, **common)

    is_auto = isinstance(weights, str) and weights.strip().lower() == "auto"
    scope = "encoder" if weights_scope == "encoder" or is_auto else None
    report = weights_policy.load(model, weights, weights_sha256, scope=scope, auto_source=encoder,
                                 prefix_map=weights_prefix_map, config_key="model.weights")
    model.encoder_pretrained = encoder_was_loaded(report, scope)
    return model


def encoder_was_loaded(report: weights_policy.LoadReport, scope: str | None) -> bool:
    """True when checkpoint tensors reached the encoder (drives `backbone_lr_mult: auto`)."""
    if scope == "encoder":
        return report.applied
    return any(key.startswith("encoder.") for key in report.loaded)
