"""Torch datasets over the common layout: random training crops and whole evaluation images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cellseg.data.intensity import load_image
from cellseg.data.transforms import (
    AugmentConfig,
    apply_geometry,
    colour_jitter,
    sample_geometry,
    to_normalised_tensor,
)
from cellseg.utils.hashing import stable_seed
from cellseg.utils.io import read_label


class TrainCropDataset(Dataset):
    """`crops_per_image` random crops of every training image per epoch, with their training targets.

    Targets are whatever the method's target transform makes of the regime's weak labels (class maps with an
    ignore index); they are computed once on the whole image, so crop borders never create false boundaries.
    `images`: RGB H x W x 3 as `cellseg.data.intensity.prepare_image` makes them (uint8 for 8-bit images,
    float32 in [0, 1] for deeper ones).
    """

    def __init__(
        self,
        ids: Sequence[str],
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        crop: int,
        crops_per_image: int,
        ignore_index: int,
        augment: AugmentConfig | None,
    ) -> None:
        if not (len(ids) == len(images) == len(targets)):
            raise ValueError("ids, images and targets must have the same length")
        for image_id, image, target in zip(ids, images, targets, strict=True):
            if image.shape[:2] != target.shape[:2]:
                raise ValueError(f"image {image_id} is {image.shape[:2]} but its target is {target.shape[:2]}")
        self.ids, self.images, self.targets = list(ids), list(images), list(targets)
        self.crop, self.crops_per_image = crop, crops_per_image
        self.ignore_index, self.augment = ignore_index, augment

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """`item` is `(index, sample_seed)` as `StreamSampler` yields it; a plain index seeds from itself."""
        index, seed = item if isinstance(item, tuple) else (item, stable_seed("crop", item))
        rng = np.random.default_rng(seed)
        which = index % len(self.images)
        geometry = sample_geometry(self.targets[which].shape, self.crop, rng, self.augment)
        image = torch.from_numpy(apply_geometry(self.images[which], geometry, fill=None)).permute(2, 0, 1)
        target = apply_geometry(self.targets[which], geometry, fill=self.ignore_index)
        if self.augment is not None:
            image = colour_jitter(image.contiguous(), rng, self.augment)
        return {
            "image": to_normalised_tensor(image),
            "target": torch.from_numpy(target.astype(np.int64)),
            "geometry": geometry.as_tensor(),
            "index": which,
            "id": self.ids[which],
        }


class WholeImageDataset(Dataset):
    """Whole images (validation, test, prediction), with their instance labels when `label_paths` is given;
    `bit_depth` and `stretch`: the data module's `data.bit_depth` (None: auto) and intensity stretch
    percentiles (None: off), applied by `cellseg.data.intensity.load_image`."""

    def __init__(
        self,
        ids: Sequence[str],
        image_paths: Sequence[Path],
        label_paths: Sequence[Path] | None = None,
        extra: Callable[[int], dict] | None = None,
        stretch: tuple[float, float] | None = None,
        bit_depth: int | None = None,
    ) -> None:
        self.ids, self.image_paths = list(ids), list(image_paths)
        self.stretch, self.bit_depth = stretch, bit_depth
        self.label_paths = list(label_paths) if label_paths is not None else None
        self.extra = extra

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image, _ = load_image(self.image_paths[index], self.bit_depth, self.stretch)
        item = {"image": to_normalised_tensor(image), "id": self.ids[index], "index": index}
        if self.label_paths is not None:
            label = read_label(self.label_paths[index])
            if label.shape != image.shape[:2]:
                raise ValueError(
                    f"label {self.label_paths[index]} is {label.shape} but image {self.image_paths[index]} "
                    f"is {image.shape[:2]}"
                )
            item["label"] = torch.from_numpy(label)
        if self.extra is not None:
            item.update(self.extra(index))
        return item


def collate_whole_images(batch: list[dict]) -> dict:
    """Whole images differ in size: stack only when shapes agree, else keep lists."""
    out: dict = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
