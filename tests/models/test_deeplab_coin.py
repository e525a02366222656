"""COIN DeepLabV3+ (docs/methods/coin.md#network): output shapes, output stride 8, head structure, parameter groups."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cellseg.models.deeplab_coin import ASPP, CoinDeepLab, build_coin_deeplab, param_groups

torch.set_num_threads(1)


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
@pytest.mark.parametrize("head_impl", ["coin", "smp"])
def test_forward_shapes(encoder, head_impl):
    model = CoinDeepLab(encoder=encoder, head_impl=head_impl).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out["seg"].shape == (2, 2, 16, 16)
    assert out["edge"].shape == (2, 2, 64, 64)


def test_without_edge_head_and_training_mode():
    model = CoinDeepLab(encoder="resnet18", edge_head=False, classes=3).train()
    out = model(torch.randn(2, 3, 64, 48))
    assert set(out) == {"seg"} and out["seg"].shape == (2, 3, 16, 12)
    out["seg"].sum().backward()
    assert model.seg_head.classifier.weight.grad is not None


def test_output_stride_8_and_head_layout():
    model = CoinDeepLab(encoder="resnet18")
    features = model.encoder(torch.randn(1, 3, 64, 64))
    assert features[-1].shape[-1] == 8 and features[2].shape[-1] == 16  # stride 8 deepest, stride 4 low level
    head = model.seg_head
    dilations = [m.dilation[0] for m in head.aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations == [12, 24, 36]
    assert head.reduce_low[0].out_channels == 48
    assert head.classifier.bias is None and head.classifier.kernel_size == (1, 1)
    drops = [m.p for m in head.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.5, 0.5, 0.1]  # ASPP projection, decoder conv 1, decoder conv 2
    # identical but independent heads
    assert type(model.edge_head) is type(head) and model.edge_head.classifier.weight is not head.classifier.weight


def test_aspp_output_stride_16_rates():
    model = CoinDeepLab(encoder="resnet18", output_stride=16, edge_head=False)
    assert isinstance(model.seg_head.aspp, ASPP)
    dilations = [m.dilation[0] for m in model.seg_head.aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations == [6, 12, 18]
    with pytest.raises(ValueError, match="output_stride"):
        CoinDeepLab(encoder="resnet18", output_stride=32)


def test_param_groups_auto_mult(tmp_path):
    model = build_coin_deeplab(encoder="resnet18", edge_head=False)
    groups = param_groups(model, lr=1e-2)
    assert [g["lr"] for g in groups] == [1e-2, 1e-2]  # random init -> mult 1.0
    n_params = sum(1 for _ in model.parameters())
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_params
    assert len(groups[0]["params"]) == sum(1 for _ in model.encoder.parameters())

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    loaded = build_coin_deeplab(encoder="resnet18", edge_head=False, weights=path)
    assert loaded.encoder_pretrained is True
    assert [g["lr"] for g in param_groups(loaded, lr=1e-2)] == pytest.approx([1e-3, 1e-2])
    assert [g["lr"] for g in param_groups(loaded, lr=1e-2, backbone_lr_mult=0.5)] == pytest.approx([5e-3, 1e-2])
