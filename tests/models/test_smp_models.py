"""smp builders: shapes, options and encoder-scope loading of torchvision ResNet weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cellseg.models.smp_models import build_segmentation_model

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(arch="unet", encoder="resnet18", decoder_channels=[64, 32, 16, 8, 8]),
        dict(arch="unet", encoder="resnet18", decoder_channels=[64, 32, 32, 16, 16], decoder_attention_type="scse"),
        dict(arch="deeplabv3plus", encoder="resnet18", decoder_channels=32, encoder_output_stride=16),
        dict(arch="deeplabv3plus", encoder="resnet18", decoder_channels=32, encoder_output_stride=8),
    ],
)
def test_forward_shape(kwargs):
    model = build_segmentation_model(classes=3, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64)
    assert model.encoder_pretrained is False


def test_scse_attention_is_built():
    model = build_segmentation_model(encoder="resnet18", decoder_channels=[16, 16, 16, 16, 16],
                                     decoder_attention_type="scse")
    assert any("SCSE" in type(m).__name__ for m in model.modules())


def test_bad_options():
    with pytest.raises(ValueError, match="arch"):
        build_segmentation_model(arch="fpn")
    with pytest.raises(ValueError, match="weights_scope"):
        build_segmentation_model(encoder="resnet18", weights_scope="decoder")


def test_encoder_scope_takes_torchvision_resnet(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # make BN statistics non-default so buffers are checked too
        for module in resnet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    source = resnet.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(source, path)

    model = build_segmentation_model(encoder="resnet18", decoder_channels=[16, 16, 16, 16, 16],
                                     weights=str(path), weights_scope="encoder")
    encoder_state = model.encoder.state_dict()
    assert set(encoder_state) == {k for k in source if not k.startswith("fc.")}
    for key, value in encoder_state.items():
        assert torch.equal(value, source[key]), key
    assert model.encoder_pretrained is True


def test_full_scope_round_trip_from_lightning_checkpoint(tmp_path):
    torch.manual_seed(1)
    kwargs = dict(encoder="resnet18", decoder_channels=[16, 16, 16, 16, 16])
    source = build_segmentation_model(**kwargs)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}, "epoch": 1}, path)
    torch.manual_seed(2)
    model = build_segmentation_model(weights=path, weights_prefix_map={"net.": ""}, **kwargs)
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    assert model.encoder_pretrained is True


def test_auto_refused_offline(monkeypatch):
    monkeypatch.setenv("CELLSEG_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="CELLSEG_OFFLINE"):
        build_segmentation_model(encoder="resnet18", weights="auto")


def test_encoder_kwargs_reach_the_timm_encoder():
    from timm.layers import BlurPool2d

    model = build_segmentation_model(encoder="tu-resnet18", decoder_channels=[16, 16, 16, 16, 16],
                                     encoder_kwargs={"aa_layer": BlurPool2d}).eval()
    assert sum(isinstance(m, BlurPool2d) for m in model.encoder.modules()) == 4  # stem + 3 stride-2 stages
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="encoder_kwargs.*tu-"):
        build_segmentation_model(encoder="resnet18", encoder_kwargs={"aa_layer": BlurPool2d})


def test_anti_aliased_config_composes_to_blur_pool(tmp_path):
    from hydra.utils import instantiate
    from timm.layers import BlurPool2d

    from cellseg.tasks.compose import compose_config

    cfg = compose_config("train", ["experiment=supervised_unet_monuseg", "model=unet_small_aa"], tmp_path)
    assert cfg.model.encoder == "tu-resnet18" and cfg.model.decoder_channels == [128, 64, 32, 16, 8]
    model = instantiate(cfg.model)
    assert any(isinstance(m, BlurPool2d) for m in model.encoder.modules())
