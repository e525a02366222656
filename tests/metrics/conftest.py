"""Real MoNuSeg label crops for the metric tests (skipped with a reason when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg.utils.io import read_label

# (image id, top, left) of 256 x 256 crops of the MoNuSeg test split
CROPS = (
    ("TCGA-2Z-A9J9-01A-01-TS1", 300, 400),
    ("TCGA-44-2665-01B-06-BS6", 600, 100),
    ("TCGA-CU-A0YN-01A-02-BSB", 744, 744),  # an image corner: objects cut by the border
)
CROP_SIZE = 256


@pytest.fixture(scope="session")
def monuseg_crops(shared_data) -> list[np.ndarray]:
    labels_dir = shared_data / "MoNuSeg" / "test" / "labels"
    if not labels_dir.is_dir():
        pytest.skip(f"MoNuSeg test labels {labels_dir} are absent")
    crops = []
    for image_id, top, left in CROPS:
        label = read_label(labels_dir / f"{image_id}.png")
        crops.append(label[top: top + CROP_SIZE, left: left + CROP_SIZE].copy())
    return crops
