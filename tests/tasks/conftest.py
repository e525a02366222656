"""Compose the real configs (as the template does), shrunk to a few CPU steps in a temporary output folder."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from cellseg.tasks.compose import compose_config


@pytest.fixture
def train_config(tmp_path):
    """compose('train', overrides) with debug=smoke on the bundled sample, writing under tmp_path."""

    def make(*overrides: str):
        cfg = compose_config("train", ["debug=smoke", *overrides], tmp_path / "run")
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.cache_dir = str(tmp_path / "cache")
        return cfg

    return make
