"""Fixtures for the weak-label tests: small synthetic instance maps, 256 x 256 crops of real MoNuSeg labels and
split layouts written into tmp folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk, ellipse

from cellseg.data.layout import SplitLayout
from cellseg.utils.io import read_label, write_label

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MONUSEG_TRAIN_IDS = ("TCGA-18-5592-01Z-00-DX1", "TCGA-21-5784-01Z-00-DX1", "TCGA-21-5786-01Z-00-DX1")
CROP = 256


def disks_label(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    """Instance map of non-overlapping disks, ids 1..n in the order of `centres`."""
    label = np.zeros(shape, dtype=np.int32)
    for index, centre in enumerate(centres, start=1):
        rows, cols = disk(centre, radius, shape=shape)
        label[rows, cols] = index
    return label


def random_blobs_label(seed: int, size: int = 96, n: int = 9) -> np.ndarray:
    """Separated ellipses on a 3 x 3 grid with random radii and orientation (a different map per seed)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), dtype=np.int32)
    step = size // 3
    for index in range(n):
        centre_r = step // 2 + step * (index // 3) + int(rng.integers(-3, 4))
        centre_c = step // 2 + step * (index % 3) + int(rng.integers(-3, 4))
        rows, cols = ellipse(
            centre_r,
            centre_c,
            int(rng.integers(4, 10)),
            int(rng.integers(4, 10)),
            shape=label.shape,
            rotation=float(rng.uniform(0, np.pi)),
        )
        label[rows, cols] = index + 1
    return label


@pytest.fixture(scope="session")
def monuseg_crops() -> dict[str, np.ndarray]:
    """Top-left 256 x 256 crops of three real MoNuSeg training label maps."""
    labels_dir = SHARED_DATA / "MoNuSeg" / "train" / "labels"
    if not labels_dir.is_dir():
        pytest.skip(f"real data not available: {labels_dir} does not exist")
    return {
        image_id: read_label(labels_dir / f"{image_id}.png")[:CROP, :CROP].copy()
        for image_id in MONUSEG_TRAIN_IDS
    }


@pytest.fixture
def make_layout(tmp_path: Path) -> Callable[[dict[str, np.ndarray]], SplitLayout]:
    """Write label maps into <tmp>/data/Toy/train/labels/<id>.png and return the layout."""

    def _make(labels: dict[str, np.ndarray], dataset: str = "Toy") -> SplitLayout:
        layout = SplitLayout.of(tmp_path / "data", dataset, "train")
        for image_id, label in labels.items():
            write_label(layout.labels_dir / f"{image_id}.png", label)
        return layout

    return _make


@pytest.fixture
def nine_disks() -> np.ndarray:
    """Nine separated disks of radius 8 on a 96 x 96 grid."""
    centres = [(16 + 32 * r, 16 + 32 * c) for r in range(3) for c in range(3)]
    return disks_label((96, 96), centres, radius=8)


@pytest.fixture
def synthetic_labels() -> dict[str, np.ndarray]:
    return {f"img{index}": random_blobs_label(seed=index) for index in range(4)}
