"""Fixtures of the COIN stage tests (helpers live in coin_synth.py: a unique module name, unlike conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from coin_synth import SEPARATE_DISKS, SHARED_DATA, TOUCHING_DISKS, disk_label


@pytest.fixture
def nuclei_label() -> np.ndarray:
    return disk_label((128, 128), SEPARATE_DISKS + TOUCHING_DISKS)


@pytest.fixture
def shared_data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (expected ../shared/data beside the checkout)")
    return SHARED_DATA
