"""Compose the real configs (as the template does), shrunk to a few CPU steps in a temporary output folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cellseg.utils.project import set_project_root_env

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
set_project_root_env()


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.cache_dir = str(output_dir / "cache")
        del cfg.hydra
    return cfg


@pytest.fixture
def train_config(tmp_path):
    """compose('train', overrides) with debug=smoke on the bundled sample, writing under tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", ["debug=smoke", *overrides], tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()
