"""configs/model/*.yaml instantiate offline (random init) and produce the documented outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cellseg.models.deeplab_coin import CoinDeepLab

torch.set_num_threads(1)
MODEL_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
NAMES = ["unet", "unet_small", "deeplabv3plus", "s2l_unet", "coin_deeplabv3p"]


def load_config(name: str, **overrides):
    cfg = OmegaConf.load(MODEL_DIR / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


def test_config_files_exist():
    assert set(NAMES) <= {p.stem for p in MODEL_DIR.glob("*.yaml")}


@pytest.mark.parametrize("name", NAMES)
def test_config_defaults_are_offline(name):
    cfg = load_config(name)
    assert cfg.weights is None and cfg.weights_sha256 is None
    assert "_target_" in cfg


@pytest.mark.parametrize("name", NAMES)
def test_instantiate_and_forward(name):
    # small encoder for speed: the structure comes from the file, the encoder size does not change it
    model = instantiate(load_config(name, encoder="resnet18")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    if isinstance(model, CoinDeepLab):
        assert out["seg"].shape == (1, 2, 16, 16) and out["edge"].shape == (1, 2, 64, 64)
    else:
        assert out.shape == (1, 2, 64, 64)


def test_file_encoders():
    assert len(instantiate(load_config("coin_deeplabv3p", edge_head=False)).encoder.layer3) == 23  # resnet101
    s2l = instantiate(load_config("s2l_unet"))
    assert len(s2l.encoder.layer3) == 6 and s2l.encoder.layer1[0].conv3.out_channels == 256  # resnet50 bottleneck
    assert any("SCSE" in type(m).__name__ for m in s2l.modules())


def test_local_weights_through_config(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = instantiate(load_config("unet_small", weights=str(path), weights_scope="encoder"))
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
