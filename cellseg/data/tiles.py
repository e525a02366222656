"""Labelled tiles for image-level supervision (Cyclic's classifier): a table of tiles, their dataset and loaders.

A tile table row is (image id, x, y, size, label): the top-left corner and side of a square tile of a training
image, label 1 (contains a nucleus) or 0 (no nucleus pixel), as `cellseg.data.weak.image_level` makes them. The
dataset crops a tile, augments it (flips, turns, zoom, colour), resizes it to the classifier's input side and
normalises it like every other image of the framework. Batches come from the seeded stream of
`cellseg.data.sampling`, so a resumed classifier sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cellseg.data.sampling import StreamDataLoader, StreamSampler, batches_per_epoch, stream_position
from cellseg.data.transforms import (
    AugmentConfig,
    CropGeometry,
    apply_geometry,
    colour_jitter,
    to_normalised_tensor,
)
from cellseg.utils.hashing import stable_seed
from cellseg.utils.io import atomic_path

TILE_COLUMNS = ("image_id", "x", "y", "size", "label")


@dataclass(frozen=True)
class Tile:
    image_id: str
    x: int
    y: int
    size: int
    label: int


def write_tile_table(path: Path, tiles: Sequence[Tile]) -> None:
    """CSV with a header of `TILE_COLUMNS`, written atomically."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TILE_COLUMNS)
        writer.writerows((t.image_id, t.x, t.y, t.size, t.label) for t in tiles)


def read_tile_table(path: Path) -> list[Tile]:
    """The rows of a tile table; one error naming the file when a column is missing or a value is not an int."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(TILE_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"tile table {path} lacks columns {sorted(missing)}; expected {list(TILE_COLUMNS)}")
        try:
            return [Tile(row["image_id"], int(row["x"]), int(row["y"]), int(row["size"]), int(row["label"]))
                    for row in reader]
        except ValueError as err:
            raise ValueError(f"tile table {path}: {err}") from err


def held_out_tiles(tiles: Sequence[Tile], fraction: float, seed: int) -> tuple[list[Tile], list[Tile]]:
    """(training, held-out) tiles: each tile is held out when its stable hash falls below `fraction`, so the
    split depends only on the tile and the seed (not on order or on which other tiles exist)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction {fraction}; expected in [0, 1)")
    held = [stable_seed(seed, "held_out", t.image_id, t.x, t.y, t.size) % 10_000 < fraction * 10_000 for t in tiles]
    return ([t for t, h in zip(tiles, held, strict=True) if not h], [t for t, h in zip(tiles, held, strict=True) if h])


class TileDataset(Dataset):
    """Labelled tiles of in-memory images: {"image": (3, input_size, input_size) normalised, "label": int64}.

    `images[id]`: RGB (H, W, 3) uint8 (or float in [0, 1]) as `cellseg.data.intensity.prepare_image` makes them.
    `augment` (None: off) flips and turns the tile, zooms it by a factor in [1 - zoom, 1 + zoom] with
    probability `augment.affine_p` (no rotation beyond the quarter turns) and jitters its colours.
    """

    def __init__(self, images: dict[str, np.ndarray], tiles: Sequence[Tile], input_size: int,
                 augment: AugmentConfig | None = None) -> None:
        if not tiles:
            raise ValueError("TileDataset needs at least one tile")
        missing = sorted({t.image_id for t in tiles} - set(images))
        if missing:
            raise ValueError(f"tiles of images that were not loaded: {missing[:5]}")
        self.images, self.tiles, self.input_size, self.augment = images, list(tiles), int(input_size), augment

    def __len__(self) -> int:
        return len(self.tiles)

    def geometry(self, tile: Tile, rng: np.random.Generator) -> CropGeometry:
        cfg = self.augment
        if cfg is None:
            return CropGeometry(tile.y, tile.x, tile.size)
        hflip, vflip = bool(rng.random() < cfg.hflip), bool(rng.random() < cfg.vflip)
        turns = int(rng.integers(0, 4)) if cfg.rot90 else 0
        zoom = float(rng.uniform(1 - cfg.scale, 1 + cfg.scale)) if rng.random() < cfg.affine_p else 1.0
        return CropGeometry(tile.y, tile.x, tile.size, hflip, vflip, turns, zoom=zoom)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, stable_seed("tile", item))
        rng = np.random.default_rng(seed)
        tile = self.tiles[index]
        crop = apply_geometry(self.images[tile.image_id], self.geometry(tile, rng), fill=None)
        image = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
        if self.augment is not None:
            image = colour_jitter(image, rng, self.augment)
        tensor = to_normalised_tensor(image)
        if tensor.shape[-1] != self.input_size:
            tensor = F.interpolate(tensor[None], size=(self.input_size,) * 2, mode="bilinear",
                                   align_corners=False)[0]
        return {"image": tensor, "label": torch.tensor(tile.label, dtype=torch.int64)}


class TileDataModule(pl.LightningDataModule):
    """Training tiles (seeded stream, resumable) and held-out tiles (validation accuracy) of one tile table."""

    def __init__(self, images: dict[str, np.ndarray], train_tiles: Sequence[Tile], val_tiles: Sequence[Tile],
                 input_size: int, batch_size: int, seed: int, augment: AugmentConfig | None,
                 num_workers: int = 0) -> None:
        super().__init__()
        self.train_set = TileDataset(images, train_tiles, input_size, augment)
        self.val_set = TileDataset(images, val_tiles, input_size) if val_tiles else None
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        rank, world = (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)
        sampler = StreamSampler(self.train_set, seed=self.seed, num_replicas=world, rank=rank)
        drop_last = len(sampler) > self.batch_size
        steps = int(trainer.global_step) if trainer is not None else 0
        if steps:  # a resumed fit continues the stream at its k-th batch
            epoch, batches = stream_position(steps, batches_per_epoch(len(sampler), self.batch_size, drop_last))
            sampler.start_at(epoch, batches * self.batch_size)
        return StreamDataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                                generator=torch.Generator().manual_seed(self.seed), num_workers=self.num_workers,
                                persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)


def load_images(ids: Sequence[str], read: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
    return {image_id: read(image_id) for image_id in ids}
