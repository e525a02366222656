"""Cyclic tile classifier (docs/methods/cyclic.md#classifier): output strides, trunk keys, CAM / Grad-CAM identities,
LRP conservation, heads, weights, and whole-image relevance maps (windowing, stitching, normalisation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cellseg.methods.cyclic.relevance import relevance_map
from cellseg.models.cam_classifier import TileClassifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TileClassifier("resnet18", output_stride=8).eval()


@pytest.mark.parametrize(("output_stride", "side"), [(8, 8), (16, 4), (32, 2)])
def test_output_stride_sets_feature_size(output_stride, side):
    model = TileClassifier("resnet18", output_stride=output_stride).eval()
    with torch.no_grad():
        features = model.features(torch.randn(1, 3, 64, 64))
        logits = model(torch.randn(2, 3, 64, 64))
    assert features.shape == (1, 512, side, side)
    assert logits.shape == (2, 2)


def test_resnet50_output_stride_8():
    model = TileClassifier("resnet50", output_stride=8).eval()
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 64, 64)).shape == (1, 2048, 8, 8)


def test_basic_block_dilation_follows_torchvision_rule():
    trunk = TileClassifier("resnet18", output_stride=8).trunk
    # first block of a dilated stage keeps the previous rate, later blocks use the new one
    assert [trunk.layer3[0].conv1.dilation, trunk.layer3[1].conv2.dilation] == [(1, 1), (2, 2)]
    assert [trunk.layer4[0].conv1.dilation, trunk.layer4[1].conv1.dilation] == [(2, 2), (4, 4)]
    assert trunk.layer4[0].conv1.stride == (1, 1) and trunk.layer4[0].downsample[0].stride == (1, 1)
    assert trunk.layer2[0].conv1.stride == (2, 2)


def test_trunk_keys_match_torchvision_body():
    reference = {k: v.shape for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
                 if not k.startswith("fc.")}
    for output_stride in (8, 32):
        trunk = TileClassifier("resnet18", output_stride=output_stride).trunk
        assert {k: v.shape for k, v in trunk.state_dict().items()} == reference


def test_cam_identity(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        for target in (0, 1):
            pre = model.cam_pre_relu(x, target)
            assert pre.shape == (2, 8, 8)
            expected = pre.mean(dim=(1, 2)) + model.head[-1].bias[target]
            torch.testing.assert_close(expected, logits[:, target], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(model.cam(x, target), pre.clamp(min=0))


def test_grad_cam_equals_cam_over_positions_under_no_grad(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cam = model.cam(x)
        grad_cam = model.grad_cam(x)  # gradient is taken internally even here
    assert grad_cam.shape == (2, 8, 8) and not grad_cam.requires_grad
    assert cam.max() > 0
    torch.testing.assert_close(grad_cam, cam / 64, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.relevance(x, "grad_cam"), grad_cam)


def test_mlp_head_refuses_cam_but_gives_grad_cam():
    model = TileClassifier("resnet18", output_stride=32, head="mlp", hidden=16).eval()
    assert [type(m) for m in model.head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert model.head[2].out_features == 16
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="grad_cam"):
        model.cam(x)
    assert model.relevance(x, "grad_cam").shape == (1, 2, 2)


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_lrp_conserves_the_logit_at_input_resolution(head):
    """Relevance starts from the pre-softmax logit y_c and is conserved down to the pixels: summed over the image
    it equals y_c (the head's bias is zeroed, as it keeps its own share). The head is scaled so that y_c is far
    from 1: a propagation started from 1 instead of y_c would be told apart."""
    torch.manual_seed(3)
    model = TileClassifier("resnet18", output_stride=16, head=head, hidden=32).eval()
    with torch.no_grad():
        model.head[-1].bias.zero_()
        model.head[-1].weight.mul_(40.0)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        logits = model(x)
        maps = {c: model.relevance(x, "lrp", target_class=c) for c in (0, 1)}
    assert maps[1].shape == (2, 48, 64) and not maps[1].requires_grad
    assert logits.abs().min() > 2.0
    for c in (0, 1):
        torch.testing.assert_close(maps[c].sum(dim=(1, 2)), logits[:, c], rtol=0.05, atol=0.05)


def test_lrp_leaves_weights_statistics_and_mode_alone(model):
    before = _state(model)
    model.train()
    try:
        model.lrp(torch.randn(1, 3, 32, 32))
        assert model.training
    finally:
        model.eval()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN merged for the pass only, restored after


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"arch": "resnet152"}, "arch"), ({"output_stride": 4}, "output_stride"), ({"head": "conv"}, "head")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TileClassifier(**{"arch": "resnet18", **kwargs})


def test_bad_mode_and_class(model):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="mode"):
        model.relevance(x, "lime")
    with pytest.raises(ValueError, match="target_class"):
        model.cam(x, target_class=2)


def test_weights_from_torchvision_and_own_checkpoint(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    model = TileClassifier("resnet18", output_stride=8, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.trunk.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert "fc.weight" in model.load_report.dropped

    torch.save(model.state_dict(), tmp_path / "classifier.pth")
    again = TileClassifier("resnet18", output_stride=32, weights=str(tmp_path / "classifier.pth"))
    assert torch.equal(again.head[-1].weight, model.head[-1].weight)
    assert not again.load_report.missing


# ----------------------------------------------------------------------------------------------- relevance maps
class ChannelRelevance(nn.Module):
    """Stand-in classifier: relevance = ReLU(first input channel) at full resolution (stitching is then exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def relevance(self, x, mode="cam", target_class=1):
        return x[:, 0].clamp(min=0)


def test_relevance_stitching_reproduces_window_maps():
    image = torch.randn(3, 50, 70)
    result = relevance_map(ChannelRelevance(), image, scale=1.0, window=32, overlap=8)
    expected = image[0].clamp(min=0)
    np.testing.assert_allclose(result, (expected / expected.max()).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["cam", "grad_cam", "lrp"])
def test_relevance_map_shape_and_normalisation(model, mode):
    seen = []
    hook = model.trunk.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    model.train()
    try:
        result = relevance_map(model, torch.randn(3, 60, 44), scale=1.5, mode=mode, window=64, overlap=16)
        assert model.training  # the caller's mode is restored
    finally:
        hook.remove()
        model.eval()
    assert seen == [False]  # 90 x 66 resized -> 2 x 2 windows of 64, one batch of 4, run in eval mode
    assert result.shape == (60, 44) and result.dtype == np.float32
    assert result.min() >= 0 and result.max() == pytest.approx(1.0)


def test_relevance_map_image_smaller_than_window(model):
    result = relevance_map(model, torch.randn(3, 20, 30), scale=1.0, window=64, overlap=16)
    assert result.shape == (20, 30) and result.max() == pytest.approx(1.0)


def test_relevance_map_all_zero_stays_zero():
    model = TileClassifier("resnet18", output_stride=8).eval()
    with torch.no_grad():
        model.head[-1].weight.zero_()
    result = relevance_map(model, torch.randn(3, 40, 40), scale=1.0, window=32, overlap=8)
    assert result.shape == (40, 40) and not result.any() and np.isfinite(result).all()


def test_relevance_map_bad_arguments(model):
    with pytest.raises(ValueError, match="overlap"):
        relevance_map(model, torch.randn(3, 32, 32), scale=1.0, window=32, overlap=32)
    with pytest.raises(ValueError, match="scale"):
        relevance_map(model, torch.randn(3, 32, 32), scale=0)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        relevance_map(model, torch.randn(1, 3, 32, 32), scale=1.0)
