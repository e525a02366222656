"""Cyclic Mask R-CNN (docs/methods/cyclic.md#detector): layout, losses with ignore boxes and empty images, ignore-aware anchor and
proposal assignment, NMS switching, identity transform, weight copy with the classifier, instance decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from cellseg.models.cam_classifier import TileClassifier
from cellseg.models.mask_rcnn import (
    IgnoreAwareMaskRCNN,
    build_mask_rcnn,
    copy_detector_to_trunk,
    copy_trunk_to_detector,
    detections_to_instances,
    intersection_over_area,
    mark_ignored,
)

torch.set_num_threads(1)
LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
SMALL_TEST = {"rpn_pre_nms_test": 100, "rpn_post_nms_test": 50, "detections": 20}  # keeps eval fast on CPU


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_mask_rcnn("resnet18", **SMALL_TEST)


def box_target(boxes, size=128, ignore=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros((len(boxes), size, size), dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y0:y1, x0:x1] = 1
    target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "masks": masks}
    if ignore is not None:
        target["ignore_boxes"] = torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4)
    return target


def test_resnet50_layout_equals_torchvision_maskrcnn():
    ours = build_mask_rcnn("resnet50")
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    # without weights torchvision builds plain BN (num_batches_tracked); the detector's body uses FrozenBatchNorm2d
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    assert isinstance(ours.backbone.body.bn1, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in ours.backbone.body.parameters())  # trainable_layers=5


def test_settings(detector):
    rpn, heads = detector.rpn, detector.roi_heads
    assert isinstance(detector, IgnoreAwareMaskRCNN)
    assert detector.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert detector.rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),) * 5
    assert rpn.fg_bg_sampler.batch_size_per_image == 64 and rpn._pre_nms_top_n["training"] == 2000
    assert rpn._post_nms_top_n == {"training": 1000, "testing": 50}
    assert heads.fg_bg_sampler.batch_size_per_image == 128 and heads.fg_bg_sampler.positive_fraction == 0.33
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert (heads.nms_thresh, heads.detections_per_img, heads.score_thresh) == (0.3, 20, 0.0)
    assert list(detector.transform.image_mean) == [0.0] * 3 and list(detector.transform.image_std) == [1.0] * 3


def test_rpn_nms_threshold_follows_mode(detector):
    detector.train()
    assert detector.rpn.nms_thresh == 0.9
    detector.eval()
    assert detector.rpn.nms_thresh == 0.7
    detector.train()
    assert detector.rpn.nms_thresh == 0.9


def test_train_losses_with_ignore_box_and_empty_image(detector):
    detector.train()
    images = [torch.randn(3, 128, 128), torch.randn(3, 128, 128)]
    targets = [box_target([[10, 10, 30, 30], [60, 60, 90, 84]], ignore=[[90, 10, 120, 40]]), box_target([])]
    losses = detector(images, targets)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    empty = detector([images[1]], [box_target([], ignore=[[0, 0, 40, 40]])])
    assert set(empty) == LOSSES and all(torch.isfinite(v) for v in empty.values())
    sum(empty.values()).backward()
    assert detector.rpn.head.cls_logits.weight.grad is not None


class SamplerSpy:
    """Wraps a BalancedPositiveNegativeSampler and records the labels it is given."""

    def __init__(self, sampler):
        self.sampler, self.labels = sampler, []

    def __call__(self, labels):
        self.labels.append([label.clone() for label in labels])
        return self.sampler(labels)


def test_training_step_discards_samples_in_ignore_boxes(detector):
    detector.train()
    image = torch.randn(3, 128, 128)
    spies = {}
    for name, head in (("rpn", detector.rpn), ("roi", detector.roi_heads)):
        spies[name] = SamplerSpy(head.fg_bg_sampler)
        head.fg_bg_sampler = spies[name]
    try:
        for ignore in (None, [[64, 0, 128, 128]]):
            torch.manual_seed(0)
            detector([image], [box_target([[10, 10, 30, 30]], ignore=ignore)])
    finally:
        detector.rpn.fg_bg_sampler, detector.roi_heads.fg_bg_sampler = spies["rpn"].sampler, spies["roi"].sampler
    for spy in spies.values():
        plain, ignored = (int((calls[0] == -1).sum()) for calls in spy.labels)
        assert ignored > plain  # the ignore boxes reached both assignments through the targets


def test_mark_ignored_keeps_something_to_sample():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    labels = torch.zeros(2)
    mark_ignored(labels, boxes, torch.tensor([[0.0, 0, 40, 40]]))
    assert labels.tolist() == [0, 0]  # everything covered and no positive: an empty sample would give NaN losses
    mark_ignored(labels, boxes, torch.tensor([[0.0, 0, 12, 12]]))
    assert labels.tolist() == [-1, 0]
    with pytest.raises(ValueError, match="ignore_boxes"):
        mark_ignored(labels, boxes, torch.zeros(3))


def test_intersection_over_own_area():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [50, 50, 60, 60]])
    ioa = intersection_over_area(boxes, torch.tensor([[0.0, 0, 10, 10]]))
    torch.testing.assert_close(ioa[:, 0], torch.tensor([1.0, 0.25, 0.0]))


# anchors / proposals: matching positive, inside the ignore box, free background, half covered, quarter covered,
# and a positive that also lies in the ignore box (foreground assignment is unchanged)
GT = [[10.0, 10, 30, 30], [80, 80, 100, 100]]
IGNORE = [[60.0, 0, 124, 60], [70, 70, 110, 110]]
CANDIDATES = torch.tensor([
    [10.0, 10, 30, 30],
    [70, 10, 90, 30],
    [10, 90, 30, 110],
    [40, 20, 80, 40],
    [45, 0, 65, 20],
    [80, 80, 100, 100],
])
EXPECTED = [1, -1, 0, -1, 0, 1]


def test_rpn_never_samples_anchor_in_ignore_box(detector):
    target = box_target(GT, ignore=IGNORE)
    labels, matched = detector.rpn.assign_targets_to_anchors([CANDIDATES], [target])
    assert labels[0].tolist() == EXPECTED
    torch.testing.assert_close(matched[0][0], target["boxes"][0])
    for _ in range(5):  # torchvision's sampler: >= 1 positive, == 0 negative, -1 never drawn
        positive, negative = detector.rpn.fg_bg_sampler(labels)
        assert not negative[0][[1, 3]].any() and not positive[0][[1, 3]].any()
        assert negative[0][[2, 4]].all() and positive[0][[0, 5]].all()


def test_rpn_ignore_on_image_without_boxes(detector):
    labels, _ = detector.rpn.assign_targets_to_anchors([CANDIDATES], [box_target([], ignore=IGNORE)])
    assert labels[0].tolist() == [0, -1, 0, -1, 0, -1]


def test_roi_heads_never_sample_proposal_in_ignore_box(detector):
    gt = box_target(GT, ignore=IGNORE)
    _, labels = detector.roi_heads.assign_targets_to_proposals(
        [CANDIDATES], [gt["boxes"]], [gt["labels"]], ignore_boxes=[gt["ignore_boxes"]]
    )
    assert labels[0].tolist() == EXPECTED
    # the training path takes the ignore boxes from the targets (GT boxes are appended as proposals)
    proposals, _, sampled_labels, _ = detector.roi_heads.select_training_samples([CANDIDATES.clone()], [gt])
    assert len(proposals[0]) == 6 and -1 not in sampled_labels[0].tolist()
    kept = {tuple(box) for box in proposals[0].tolist()}
    assert tuple(CANDIDATES[1].tolist()) not in kept and tuple(CANDIDATES[3].tolist()) not in kept
    assert detector.roi_heads._ignore_boxes is None


def test_background_mode_is_plain_torchvision():
    model = build_mask_rcnn("resnet18", ignore_mode="background", **SMALL_TEST)
    gt = box_target(GT, ignore=IGNORE)
    labels, _ = model.rpn.assign_targets_to_anchors([CANDIDATES], [gt])
    assert labels[0].tolist() == [1, 0, 0, 0, 0, 1]
    _, roi_labels = model.roi_heads.assign_targets_to_proposals(
        [CANDIDATES], [gt["boxes"]], [gt["labels"]], ignore_boxes=[gt["ignore_boxes"]]
    )
    assert roi_labels[0].tolist() == [1, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="ignore_mode"):
        build_mask_rcnn("resnet18", ignore_mode="drop")


def test_no_resize_and_outputs_in_input_coordinates(detector):
    image = torch.randn(3, 96, 128)
    target = box_target([[100, 10, 126, 40]], size=128)
    target["masks"] = target["masks"][:, :96]
    detector.train()
    images, targets = detector.transform([image], [target])
    assert images.image_sizes == [(96, 128)]
    assert torch.equal(images.tensors[0, :, :96, :128], image)
    assert torch.equal(targets[0]["boxes"], target["boxes"])
    detector.eval()
    with torch.no_grad():
        output = detector([image])[0]
    detector.train()
    boxes = output["boxes"]
    assert output["masks"].shape == (len(boxes), 1, 96, 128) and len(boxes) > 0
    assert boxes[:, 2].max() <= 128 and boxes[:, 3].max() <= 96 and boxes[:, 2].max() > 96  # not squashed


def test_bad_build_arguments():
    with pytest.raises(ValueError, match="anchor_sizes"):
        build_mask_rcnn("resnet18", anchor_sizes=(8, 16, 32))
    with pytest.raises(ValueError, match="backbone"):
        build_mask_rcnn("vgg16")


def test_coco_style_checkpoint_loads(tmp_path):
    """A 91-class checkpoint with pre-v2 key names (as torchvision's COCO_V1 file): shared layers load, the
    class-specific predictor layers stay random."""
    source = build_mask_rcnn("resnet18", num_classes=91).state_dict()
    legacy = {}
    for key, value in source.items():
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            key = key.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        legacy[key] = value
    torch.save(legacy, tmp_path / "coco.pth")
    model = build_mask_rcnn("resnet18", weights=str(tmp_path / "coco.pth"))
    state = model.state_dict()
    for key in ("rpn.head.conv.0.0.weight", "roi_heads.mask_head.3.0.weight", "backbone.body.layer4.1.bn2.running_var",
                "roi_heads.box_head.fc7.weight"):
        assert torch.equal(state[key], source[key])
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (2, 1024)


# ----------------------------------------------------------------------------------------------- weight copy
def randomise_bn(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d):
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean"):
                    getattr(m, name).copy_(torch.randn_like(getattr(m, name)) * 0.1 + (name == "weight"))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)


def test_weight_copy_both_ways_and_identical_c5(detector):
    torch.manual_seed(1)
    classifier = TileClassifier("resnet18", output_stride=32).eval()
    randomise_bn(classifier.trunk)
    copied = copy_trunk_to_detector(classifier, detector)
    body = detector.backbone.body.state_dict()
    trunk = classifier.trunk.state_dict()
    assert "bn1.running_var" in copied and not any(k.endswith("num_batches_tracked") for k in copied)
    assert all(torch.equal(body[k], trunk[k]) for k in copied) and set(copied) == set(body)
    detector.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(detector.backbone.body(x)["3"], classifier.features(x), rtol=1e-4, atol=1e-4)
    detector.train()

    randomise_bn(detector.backbone.body)
    with torch.no_grad():
        detector.backbone.body.conv1.weight.mul_(2.0)
    dilated = TileClassifier("resnet18", output_stride=8)  # same weight shapes as the strided body
    copy_detector_to_trunk(detector, dilated)
    body, trunk = detector.backbone.body.state_dict(), dilated.trunk.state_dict()
    assert all(torch.equal(trunk[k], body[k]) for k in body)
    assert isinstance(dilated.trunk.bn1.weight, torch.nn.Parameter)


def test_weight_copy_refuses_other_arch(detector):
    with pytest.raises(ValueError, match="different architectures"):
        copy_trunk_to_detector(TileClassifier("resnet34", output_stride=32), detector)
    with pytest.raises(ValueError, match="different architectures"):
        copy_detector_to_trunk(detector, TileClassifier("resnet50", output_stride=32))


# ----------------------------------------------------------------------------------------------- decoding
def test_detections_to_instances():
    masks = torch.zeros(4, 1, 6, 8)
    masks[0, 0, 0:3, 0:4] = 0.9  # score 0.5: second, loses the overlap with detection 1
    masks[1, 0, 2:5, 2:6] = 0.8  # score 0.9: first
    masks[2, 0, 3:4, 3:5] = 0.7  # score 0.6: fully covered by detection 1 -> no id
    masks[3, 0, 5:6, 6:8] = 0.9  # score 0.1: below min_score
    masks[0, 0, 0, 7] = 0.4  # below mask_threshold
    output = {"boxes": torch.zeros(4, 4), "labels": torch.ones(4, dtype=torch.int64),
              "scores": torch.tensor([0.5, 0.9, 0.6, 0.1]), "masks": masks}
    instances = detections_to_instances(output, (6, 8), mask_threshold=0.5, min_score=0.2)
    expected = np.zeros((6, 8), dtype=np.int32)
    expected[0:3, 0:4] = 2
    expected[2:5, 2:6] = 1
    assert instances.dtype == np.int32
    np.testing.assert_array_equal(instances, expected)
    instances, scores = detections_to_instances(output, (6, 8), min_score=0.2, return_scores=True)
    np.testing.assert_array_equal(instances, expected)
    np.testing.assert_allclose(scores, [0.9, 0.5])  # id 1, id 2 (the covered 0.6 detection has no id)
    assert detections_to_instances(output, (6, 8)).max() == 3
    empty = {"scores": torch.zeros(0), "masks": torch.zeros(0, 1, 6, 8)}
    assert not detections_to_instances(empty, (6, 8)).any()
    with pytest.raises(ValueError, match="masks"):
        detections_to_instances(output, (8, 6))
