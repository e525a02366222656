"""Fixtures of the S2L tests: the real configs composed with debug=smoke into a temporary folder."""

from __future__ import annotations

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from s2l_helpers import load_compose_config

torch.set_num_threads(1)
compose_config = load_compose_config()


@pytest.fixture
def s2l_config(tmp_path):
    """compose('train', ["debug=smoke", "method=s2l", *overrides]) writing under tmp_path/run."""

    def make(*overrides: str):
        return compose_config("train", ["debug=smoke", "method=s2l", *overrides], tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()
