"""Mask R-CNN back end of the cyclic method (docs/methods/cyclic.md#detector).

`build_mask_rcnn` gives torchvision's `MaskRCNN` with the `maskrcnn_resnet50_fpn` module layout (COCO
checkpoints load through `weights:`), the reference anchor / RPN / ROI settings, no internal resize or
normalisation, an RPN NMS threshold that follows train() / eval(), and ignore regions: targets may carry
`ignore_boxes` (K, 4) xyxy, and a would-be negative anchor or proposal covered by one of them (intersection over
its own area >= 0.5) is labelled -1, which torchvision's `BalancedPositiveNegativeSampler` never samples.

Input contract (forward): a list of (3, H, W) float images already scaled by the caller and ImageNet-normalised
(`cellseg.data.transforms.to_normalised_tensor`); train-mode targets as torchvision's (`boxes` (N, 4) float xyxy,
`labels` (N,) int64, `masks` (N, H, W) uint8) plus optional `ignore_boxes`. Eval-mode outputs are in input pixel
coordinates: `boxes` (N, 4), `labels`, `scores`, `masks` (N, 1, H, W) probabilities.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from cellseg import weights as weights_policy

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
IGNORE_MODES = ("ignore", "background")
BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision default = matterport box std (0.1, 0.1, 0.2, 0.2)
IGNORE_IOA = 0.5
# Pre-v2 torchvision checkpoints (e.g. the COCO_V1 Mask R-CNN file) use older names for two heads; torchvision
# renames them only when the file's version metadata is present, which a plain state dict no longer carries.
LEGACY_KEY_MAP = {
    "rpn.head.conv.weight": "rpn.head.conv.0.0.weight",
    "rpn.head.conv.bias": "rpn.head.conv.0.0.bias",
    **{f"roi_heads.mask_head.mask_fcn{i}.": f"roi_heads.mask_head.{i - 1}.0." for i in range(1, 5)},
}
# Class-count dependent layers: dropped from a checkpoint (kept random) when their shapes differ (COCO 91 -> 2).
CLASS_SPECIFIC_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


# ----------------------------------------------------------------------------------------------- ignore regions
def intersection_over_area(boxes: Tensor, regions: Tensor) -> Tensor:
    """(N, M) intersection of each of `boxes` (N, 4) with each of `regions` (M, 4), divided by the box's area."""
    top_left = torch.maximum(boxes[:, None, :2], regions[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    return intersection / area[:, None]


def _check_ignore_boxes(ignore_boxes) -> Tensor | None:
    if ignore_boxes is None:
        return None
    if not isinstance(ignore_boxes, Tensor) or ignore_boxes.ndim != 2 or ignore_boxes.shape[1] != 4:
        shape = tuple(ignore_boxes.shape) if hasattr(ignore_boxes, "shape") else type(ignore_boxes).__name__
        raise ValueError(f"target['ignore_boxes'] has shape {shape}; expected a float (K, 4) xyxy tensor")
    return ignore_boxes if ignore_boxes.numel() else None


def mark_ignored(labels: Tensor, boxes: Tensor, ignore_boxes: Tensor | None, threshold: float = IGNORE_IOA) -> Tensor:
    """Set label -1, in place, on negatives (label 0) covered >= `threshold` of their own area by an ignore box.

    Positives and already-discarded entries are unchanged. If nothing sampleable would remain in the image (no
    positive, every negative ignored), the labels are left as they are: an empty sample makes the losses NaN.
    """
    ignore_boxes = _check_ignore_boxes(ignore_boxes)
    if ignore_boxes is None or boxes.numel() == 0:
        return labels
    covered = intersection_over_area(boxes, ignore_boxes.to(boxes)).amax(dim=1) >= threshold
    hit = covered & (labels == 0)
    if hit.any() and not ((labels > 0).any() or ((labels == 0) & ~hit).any()):
        log.debug("ignore regions cover every sample of an image; treating them as background there")
        return labels
    labels[hit] = -1
    return labels


def _check_ignore_mode(ignore_mode: str) -> None:
    if ignore_mode not in IGNORE_MODES:
        raise ValueError(f"ignore_mode={ignore_mode!r}; expected one of {IGNORE_MODES}")


class IgnoreAwareRPN(RegionProposalNetwork):
    """torchvision RPN whose negatives inside ignore boxes are discarded and whose NMS threshold follows the mode.

    `nms_thresh` reads `nms_thresh_train` in train() and `nms_thresh_test` in eval(); assigning a float to it
    sets both. `ignore_mode='background'` is plain torchvision behaviour (ignore boxes unused).
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh_train: float,
        nms_thresh_test: float,
        score_thresh: float = 0.0,
        ignore_mode: str = "ignore",
    ) -> None:
        _check_ignore_mode(ignore_mode)
        super().__init__(anchor_generator, head, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
                         positive_fraction, pre_nms_top_n, post_nms_top_n, nms_thresh_train, score_thresh)
        self._nms_thresh = {"training": float(nms_thresh_train), "testing": float(nms_thresh_test)}
        self.ignore_mode = ignore_mode

    @property
    def nms_thresh(self) -> float:
        return self._nms_thresh["training" if self.training else "testing"]

    @nms_thresh.setter
    def nms_thresh(self, value: float) -> None:
        self._nms_thresh = {"training": float(value), "testing": float(value)}

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's assignment (1 positive, 0 negative, -1 discarded), then ignored negatives -> -1."""
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        if self.ignore_mode == "ignore":
            for labels_i, anchors_i, target in zip(labels, anchors, targets, strict=True):
                mark_ignored(labels_i, anchors_i, target.get("ignore_boxes"))
        return labels, matched_gt_boxes


class IgnoreAwareRoIHeads(RoIHeads):
    """torchvision RoIHeads whose background proposals inside ignore boxes are discarded (label -1).

    torchvision's `select_training_samples` passes only boxes and labels to `assign_targets_to_proposals`, so the
    targets' `ignore_boxes` are held for the duration of that call.
    """

    def __init__(self, *args, ignore_mode: str = "ignore", **kwargs) -> None:
        _check_ignore_mode(ignore_mode)
        super().__init__(*args, **kwargs)
        self.ignore_mode = ignore_mode
        self._ignore_boxes: list[Tensor | None] | None = None

    def select_training_samples(self, proposals, targets):
        self._ignore_boxes = None if targets is None else [t.get("ignore_boxes") for t in targets]
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._ignore_boxes = None

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels, ignore_boxes=None):
        """torchvision's assignment (class id, 0 background, -1 discarded), then ignored background -> -1.

        `ignore_boxes`: per image (K, 4) or None; defaults to the targets of the running training step.
        """
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        ignore_boxes = self._ignore_boxes if ignore_boxes is None else ignore_boxes
        if self.ignore_mode == "ignore" and ignore_boxes is not None:
            for labels_i, proposals_i, ignore_i in zip(labels, proposals, ignore_boxes, strict=True):
                mark_ignored(labels_i, proposals_i, ignore_i)
        return matched_idxs, labels


# ----------------------------------------------------------------------------------------------- the model
class NoResizeTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform without resizing: images keep their size (the caller scales and crops), so
    `postprocess` maps boxes back with ratio 1 and pastes masks at the input size. Padding to a multiple of
    `size_divisible` (bottom / right) is kept; it does not move coordinates."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        return image, target


class IgnoreAwareMaskRCNN(MaskRCNN):
    """torchvision MaskRCNN with `NoResizeTransform` (mean 0, std 1: inputs are already normalised),
    `IgnoreAwareRPN` and `IgnoreAwareRoIHeads`; module names and shapes are those of `MaskRCNN`.

    Build it with `build_mask_rcnn`; `backbone` is a torchvision `BackboneWithFPN` (5 feature maps).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        anchor_generator: AnchorGenerator,
        rpn_batch: int,
        rpn_pre_nms: dict[str, int],
        rpn_post_nms: dict[str, int],
        rpn_nms_train: float,
        rpn_nms_test: float,
        box_batch: int,
        box_pos_frac: float,
        box_nms: float,
        detections: int,
        box_score_thresh: float,
        ignore_mode: str,
    ) -> None:
        super().__init__(
            backbone, num_classes, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
            rpn_anchor_generator=anchor_generator, box_score_thresh=box_score_thresh, box_nms_thresh=box_nms,
            box_detections_per_img=detections, box_batch_size_per_image=box_batch,
            box_positive_fraction=box_pos_frac, bbox_reg_weights=BBOX_REG_WEIGHTS,
        )
        # min_size / max_size are unused by NoResizeTransform.
        self.transform = NoResizeTransform(512, 512, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
        self.rpn = IgnoreAwareRPN(
            anchor_generator, self.rpn.head, 0.7, 0.3, rpn_batch, 0.5, rpn_pre_nms, rpn_post_nms,
            rpn_nms_train, rpn_nms_test, ignore_mode=ignore_mode,
        )
        heads = self.roi_heads
        self.roi_heads = IgnoreAwareRoIHeads(
            heads.box_roi_pool, heads.box_head, heads.box_predictor, 0.5, 0.5, box_batch, box_pos_frac,
            BBOX_REG_WEIGHTS, box_score_thresh, box_nms, detections, mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head, mask_predictor=heads.mask_predictor, ignore_mode=ignore_mode,
        )
        self.ignore_mode = ignore_mode


def _check_build_arguments(backbone: str, num_classes: int, anchor_sizes, aspect_ratios, ignore_mode: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r}; expected one of {BACKBONES}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; expected >= 2 (background + nucleus)")
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes={list(anchor_sizes)}; expected 5 sizes, one per FPN level P2-P6")
    if not aspect_ratios or min(aspect_ratios) <= 0:
        raise ValueError(f"aspect_ratios={list(aspect_ratios)}; expected positive ratios, e.g. (0.5, 1.0, 2.0)")
    _check_ignore_mode(ignore_mode)


def build_mask_rcnn(
    backbone: str = "resnet50",
    num_classes: int = 2,
    weights: str | os.PathLike | None = None,
    anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_batch: int = 64,
    rpn_pre_nms_train: int = 2000,
    rpn_pre_nms_test: int = 1000,
    rpn_post_nms_train: int = 1000,
    rpn_post_nms_test: int = 2000,
    rpn_nms_train: float = 0.9,
    rpn_nms_test: float = 0.7,
    box_batch: int = 128,
    box_pos_frac: float = 0.33,
    box_nms: float = 0.3,
    detections: int = 400,
    box_score_thresh: float = 0.0,
    ignore_mode: str = "ignore",
    weights_sha256: str | None = None,
) -> IgnoreAwareMaskRCNN:
    """Mask R-CNN (ResNet-FPN, FrozenBatchNorm2d, all 5 stages trainable) from random init, then `weights`.

    `weights`: None (random) or a local checkpoint of this layout, e.g. torchvision's COCO
    `maskrcnn_resnet50_fpn` file: legacy key names are renamed and class-specific predictor layers whose shape
    differs (91 COCO classes) are dropped and stay random. Any other shape mismatch raises.
    """
    _check_build_arguments(backbone, num_classes, anchor_sizes, aspect_ratios, ignore_mode)
    body = resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=5)
    anchors = AnchorGenerator(
        sizes=tuple((int(size),) for size in anchor_sizes),
        aspect_ratios=(tuple(float(r) for r in aspect_ratios),) * len(anchor_sizes),
    )
    model = IgnoreAwareMaskRCNN(
        body, num_classes, anchors, rpn_batch,
        {"training": rpn_pre_nms_train, "testing": rpn_pre_nms_test},
        {"training": rpn_post_nms_train, "testing": rpn_post_nms_test},
        rpn_nms_train, rpn_nms_test, box_batch, box_pos_frac, box_nms, detections, box_score_thresh, ignore_mode,
    )
    load_detector_weights(model, weights, weights_sha256)
    return model


def load_detector_weights(
    model: nn.Module, weights: str | os.PathLike | None, sha256: str | None = None
) -> weights_policy.LoadReport:
    """`cellseg.weights.load` with legacy key renaming and mismatching class-specific layers dropped."""
    path, _ = weights_policy.resolve(weights, sha256, config_key="model.detector.weights")
    if path is None:
        return weights_policy.LoadReport()
    state = weights_policy.apply_prefix_map(weights_policy.read_state_dict(path), LEGACY_KEY_MAP)
    target = model.state_dict()
    drop = [
        key for key, value in state.items()
        if key.startswith(CLASS_SPECIFIC_PREFIXES) and key in target and value.shape != target[key].shape
    ]
    if drop:
        log.info("detector weights: %d class-specific tensors differ in shape and stay random: %s", len(drop), drop)
    return weights_policy.load(model, path, sha256, prefix_map=LEGACY_KEY_MAP, drop_prefixes=tuple(drop),
                               config_key="model.detector.weights")


# ----------------------------------------------------------------------------------------------- weight copy
def _copy_state(source: nn.Module, target: nn.Module, source_name: str, target_name: str) -> list[str]:
    """Copy every tensor of `source` (params and buffers) into the same-named tensor of `target`, in place.

    `num_batches_tracked` is skipped (FrozenBatchNorm2d has none). Raises ValueError when the key sets or any
    shape differ (different architectures). Returns the copied keys.
    """
    source_state = {k: v for k, v in source.state_dict(keep_vars=True).items() if not k.endswith("num_batches_tracked")}
    target_state = {k: v for k, v in target.state_dict(keep_vars=True).items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(set(source_state) - set(target_state)), sorted(set(target_state) - set(source_state))
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(target_state[k].shape)}" for k, v in source_state.items()
             if k in target_state and v.shape != target_state[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"cannot copy {source_name} into {target_name}: different architectures "
            f"(only in source {missing[:5]}, only in target {extra[:5]}, shape mismatches {wrong[:5]})"
        )
    with torch.no_grad():
        for key, value in source_state.items():
            target_state[key].copy_(value)
    return sorted(source_state)


def copy_trunk_to_detector(classifier: nn.Module, detector: nn.Module) -> list[str]:
    """classifier.trunk.<k> -> detector.backbone.body.<k> (conv weights; BN affine and running stats into the
    FrozenBatchNorm2d buffers). Returns the copied keys; raises ValueError for different architectures."""
    return _copy_state(classifier.trunk, detector.backbone.body, "classifier.trunk", "detector.backbone.body")


def copy_detector_to_trunk(detector: nn.Module, classifier: nn.Module) -> list[str]:
    """detector.backbone.body.<k> -> classifier.trunk.<k> (FrozenBatchNorm2d buffers into BN weight, bias and
    running stats; the trunk's `num_batches_tracked` is left as is). Raises ValueError for different archs."""
    return _copy_state(detector.backbone.body, classifier.trunk, "detector.backbone.body", "classifier.trunk")


# ----------------------------------------------------------------------------------------------- decoding
def _as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


def detections_to_instances(
    output: dict,
    shape: tuple[int, int],
    mask_threshold: float = 0.5,
    min_score: float = 0.0,
    return_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """int32 (H, W) instance map from one eval-mode output (`scores` (N,), `masks` (N, 1, H, W) probabilities).

    Detections with score >= `min_score` are painted in descending score order; a pixel belongs to a detection
    where its mask probability >= `mask_threshold`, and the higher-scoring detection wins overlaps. 0 is
    background; ids 1..K are consecutive in score order. A detection left with no pixel (empty mask, or covered
    by higher-scoring ones) gets no id, so an id is not the detection's rank: with `return_scores` the result is
    (instances, float32 (K,) scores) where scores[i - 1] belongs to id i.
    """
    height, width = (int(s) for s in shape)
    scores = _as_numpy(output["scores"]).reshape(-1)
    masks = _as_numpy(output["masks"])
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.shape != (len(scores), height, width):
        raise ValueError(f"output['masks'] has shape {masks.shape}; expected ({len(scores)}, 1, {height}, {width})")
    instances = np.zeros((height, width), dtype=np.int32)
    painted: list[float] = []
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] < min_score:
            break
        pixels = (masks[index] >= mask_threshold) & (instances == 0)
        if pixels.any():
            painted.append(float(scores[index]))
            instances[pixels] = len(painted)
    if return_scores:
        return instances, np.asarray(painted, dtype=np.float32)
    return instances
