"""Tile classifier of the cyclic method (docs/methods/cyclic.md#classifier): a torchvision ResNet trunk,
global average pooling and a linear (CAM) or MLP (Grad-CAM) head, with class activation maps and layer-wise
relevance propagation (LRP, through zennit).

Input contract: (B, 3, H, W) float RGB normalised with ImageNet mean/std
(`cellseg.data.transforms.to_normalised_tensor`). The trunk's state-dict keys are `conv1.*, bn1.*, layer1.* ...
layer4.*`, i.e. exactly torchvision detection's `backbone.body.<k>`, so weights move 1:1 between the classifier
and the Mask R-CNN body (`cellseg.models.mask_rcnn.copy_trunk_to_detector`).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from cellseg import weights as weights_policy

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
OUTPUT_STRIDES = (32, 16, 8)
HEADS = ("linear", "mlp")
RELEVANCE_MODES = ("cam", "grad_cam", "lrp")
TRUNK_KEYS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
# Checkpoint key prefixes -> classifier keys: torchvision ResNets (`conv1.*`, catch-all ""), detector checkpoints
# (`backbone.body.*`), the classifier's own checkpoints; detector-only parts stay unexpected (logged, ignored).
WEIGHTS_PREFIX_MAP = {
    "": "trunk.",
    "trunk.": "trunk.",
    "head.": "head.",
    "fc.": "fc.",
    "backbone.body.": "trunk.",
    "backbone.fpn.": "backbone.fpn.",
    "rpn.": "rpn.",
    "roi_heads.": "roi_heads.",
}


def _dilations(output_stride: int) -> tuple[bool, bool, bool]:
    """torchvision's `replace_stride_with_dilation` for layer2, layer3, layer4."""
    return {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]


def _dilate_basic_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a stride-2 BasicBlock stage into a dilated stride-1 one, in place (weight shapes unchanged).

    Mirrors torchvision `ResNet._make_layer(dilate=True)`: the first block runs at the previous dilation with
    stride 1 (conv1 and the 1x1 downsample), the later blocks at the new dilation; padding = dilation keeps sizes.
    """
    for index, block in enumerate(layer):
        if not isinstance(block, BasicBlock):
            raise TypeError(f"expected BasicBlock stages, got {type(block).__name__}")
        rate = previous_dilation if index == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.stride, conv.dilation, conv.padding = (1, 1), (rate, rate), (rate, rate)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        block.stride = 1


def build_trunk(arch: str = "resnet50", output_stride: int = 8) -> tuple[nn.Sequential, int]:
    """(trunk, channels): a randomly initialised torchvision ResNet up to layer4 at the given output stride.

    Bottleneck nets use torchvision's `replace_stride_with_dilation`; BasicBlock nets (resnet18/34), which
    torchvision refuses to dilate, are dilated after construction by `_dilate_basic_layer`.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}; expected one of {ARCHS}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride={output_stride}; expected one of {OUTPUT_STRIDES}")
    dilate = _dilations(output_stride)
    basic = arch in ("resnet18", "resnet34")
    net = getattr(torchvision.models, arch)(weights=None, **({} if basic else {"replace_stride_with_dilation": dilate}))
    if basic:
        dilation = 1
        for layer, flag in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
            if flag:
                _dilate_basic_layer(layer, dilation, dilation * 2)
                dilation *= 2
    trunk = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in TRUNK_KEYS))
    return trunk, net.fc.in_features


def build_head(head: str, channels: int, num_classes: int, hidden: int) -> nn.Sequential:
    """GAP + Linear (`linear`, CAM is exact) or GAP + Linear + ReLU + Linear (`mlp`, the reference head)."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}; expected one of {HEADS}")
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    if head == "linear":
        layers.append(nn.Linear(channels, num_classes))
    else:
        layers += [nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


class TileClassifier(nn.Module):
    """ResNet trunk + GAP head with class activation maps.

    Args:
        arch: torchvision ResNet name, one of `ARCHS` (always built with `weights=None`).
        output_stride: 32, 16 or 8 (dilated layer4 / layer3+4); the weight shapes do not depend on it.
        head: `linear` (GAP + Linear, CAM available) or `mlp` (GAP + Linear(C, hidden) + ReLU + Linear).
        num_classes: number of logits (2: negative, positive tile).
        hidden: width of the `mlp` head.
        weights: None for random init, or a local checkpoint loaded by `cellseg.weights.load` (classifier,
            torchvision ResNet or detector checkpoints; see `WEIGHTS_PREFIX_MAP`).

    Attributes: `trunk` (conv1 ... layer4, keys as torchvision detection's `backbone.body`), `head`, `channels`.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        output_stride: int = 8,
        head: str = "linear",
        num_classes: int = 2,
        hidden: int = 1024,
        weights: str | os.PathLike | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or hidden < 1:
            raise ValueError(f"num_classes={num_classes}, hidden={hidden}; expected both >= 1")
        self.arch, self.output_stride, self.head_kind = arch, output_stride, head
        self.trunk, self.channels = build_trunk(arch, output_stride)
        self.head = build_head(head, self.channels, num_classes, hidden)
        self.load_report = weights_policy.load(
            self, weights, weights_sha256, prefix_map=WEIGHTS_PREFIX_MAP, config_key="classifier.weights"
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> layer4 maps (B, C, ceil(H / os), ceil(W / os))."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, num_classes) pre-softmax logits."""
        return self.head(self.features(x))

    def _check_class(self, target_class: int) -> None:
        num_classes = self.head[-1].out_features
        if not 0 <= target_class < num_classes:
            raise ValueError(f"target_class={target_class}; expected 0 <= target_class < {num_classes}")

    def cam_pre_relu(self, x: torch.Tensor, target_class: int = 1) -> torch.Tensor:
        """(B, h, w) sum_k w_ck A_k before the ReLU; its spatial mean plus the bias b_c is the logit y_c."""
        if self.head_kind != "linear":
            raise ValueError(f"CAM needs head='linear' (got head={self.head_kind!r}); use mode 'grad_cam'")
        self._check_class(target_class)
        weight = self.head[-1].weight[target_class]
        return torch.einsum("k,bkhw->bhw", weight, self.features(x))

    def cam(self, x: torch.Tensor, target_class: int = 1) -> torch.Tensor:
        """(B, h, w) class activation map ReLU(sum_k w_ck A_k) at the trunk's output stride."""
        return torch.relu(self.cam_pre_relu(x, target_class))

    def grad_cam(self, x: torch.Tensor, target_class: int = 1) -> torch.Tensor:
        """(B, h, w) Grad-CAM ReLU(sum_k alpha_k A_k), alpha_k = spatial mean of d y_c / d A_k (pre-softmax y_c).

        Works under torch.no_grad and in eval mode (the gradient is taken inside torch.enable_grad); not under
        torch.inference_mode. Returned detached. With the linear head it equals `cam / (h * w)`.
        """
        self._check_class(target_class)
        with torch.enable_grad():
            # Gradients w.r.t. A only involve the head; a detached leaf also works when the trunk is frozen.
            activations = self.features(x).detach().requires_grad_(True)
            score = self.head(activations)[:, target_class].sum()  # samples are independent: one backward
            (gradients,) = torch.autograd.grad(score, activations)
        alpha = gradients.mean(dim=(2, 3), keepdim=True)
        return torch.relu((alpha * activations.detach()).sum(dim=1))

    def lrp(self, x: torch.Tensor, target_class: int = 1) -> torch.Tensor:
        """(B, H, W) LRP relevance of the pre-softmax logit y_c at input resolution, summed over RGB.

        The reference's preset (flat rule on the first layer, z+ = alpha1-beta0 on convolutions, epsilon on dense
        layers: zennit's `EpsilonPlusFlat`), with batch norm merged into the convolutions and the residual sums
        made explicit (`ResNetCanonizer`). Propagation starts from y_c itself, so a tile the classifier finds
        negative sends back little or negative relevance. Either head works. Runs in eval mode (the caller's mode
        and the weights are restored on return); works under torch.no_grad, not torch.inference_mode. Returned
        detached; values can be negative.
        """
        self._check_class(target_class)
        one_hot = torch.zeros(self.head[-1].out_features, device=x.device, dtype=x.dtype)
        one_hot[target_class] = 1.0
        network = nn.Sequential(self.trunk, self.head)
        was_training = self.training
        self.eval()  # merging batch norm into the convolutions is exact only with the running statistics
        try:
            with torch.enable_grad(), Gradient(network, EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
                _, relevance = attributor(x.detach().requires_grad_(True), lambda logits: logits * one_hot)
        finally:
            self.train(was_training)
        return relevance.sum(dim=1).detach()

    def relevance(self, x: torch.Tensor, mode: str = "cam", target_class: int = 1) -> torch.Tensor:
        """(B, h, w) relevance map of `target_class`: `cam`, `grad_cam` (at the trunk's stride) or `lrp` (input
        resolution)."""
        if mode == "cam":
            return self.cam(x, target_class)
        if mode == "grad_cam":
            return self.grad_cam(x, target_class)
        if mode == "lrp":
            return self.lrp(x, target_class)
        raise ValueError(f"relevance mode={mode!r}; expected one of {RELEVANCE_MODES}")
