"""What the multi-stage pipelines (COIN, Cyclic) share: config nodes as plain data, training-image reading,
stage seeds, checkpoint states and per-image profiles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from cellseg.data.intensity import load_image
from cellseg.pipeline.stage import Stage
from cellseg.utils.hashing import stable_seed


def as_container(node) -> dict | list | None:
    """A config node as plain, resolved data (what a stage's hash and summary hold)."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


@dataclass(frozen=True)
class TrainingImages:
    """`read(image_id)`: RGB of a training image as the network sees it before normalisation (data.bit_depth,
    stretch): uint8 for 8-bit images, float32 in [0, 1] for deeper ones. Picklable, so per-image tasks read their
    own image in whichever process runs them."""

    layout: object
    bit_depth: int | None
    stretch: tuple[float, float] | None

    def __call__(self, image_id: str) -> np.ndarray:
        image, _ = load_image(self.layout.image_path(image_id), self.bit_depth, self.stretch)
        return image


def stage_seed(seed: int, stage_key: str) -> int:
    """The seed a stage starts from: the same whether the stage runs after its inputs or alone on resume."""
    return stable_seed(seed, "stage", stage_key) % 2**32


def load_checkpoint_state(stage: Stage) -> dict:
    """state_dict of a training stage's checkpoint (`summary["checkpoint"]`)."""
    path = Path(stage.summary["checkpoint"])
    if not path.is_file():
        raise FileNotFoundError(f"{stage.key}: checkpoint {path} not found (the stage folder was changed by hand?)")
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def per_image(record: dict, n_images: int) -> dict:
    return {**record, "n_images": n_images, "wall_s_per_image": record["wall_s"] / max(n_images, 1)}
