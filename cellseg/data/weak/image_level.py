"""Image-level tile labels from the training GT (docs/methods/cyclic.md#tile-labels), cached as CSV.

This simulates image-level supervision: the instance masks are read once, to say of every tile whether it holds a
nucleus, and never again. Positive (1): at least one nucleus with >= `pos_min_frac` of its area and >= `pos_min_px`
of its pixels inside the tile. Negative (0): no nucleus pixel in the tile. Any other tile is dropped.

The cached CSVs hold every labelled tile, unbalanced; the pipeline's tile stage balances them (`balance_tiles`, with
the seed of `supervision.seed`) and warns when negatives are scarce (`warn_if_few_negatives`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from cellseg.data.weak.cache import CachedWeakLabels
from cellseg.utils.io import atomic_path

log = logging.getLogger(__name__)

TILE_POSITIVE = 1
TILE_NEGATIVE = 0
TILE_CSV_HEADER = ("x", "y", "size", "label")

TileRow = tuple[str, int, int, int, int]  # (image_id, x, y, size, label)


# --- parameters ---------------------------------------------------------------------------------------------------
def validate_tile_params(tile: int, stride: int, pos_min_frac: float, pos_min_px: int) -> tuple[int, int, float, int]:
    """The four tile parameters, checked and typed; one ValueError naming the `supervision.` key otherwise."""
    tile_value = _positive_int(tile, "supervision.tile", "the tile side in px, e.g. 96")
    stride_value = _positive_int(stride, "supervision.stride", f"in [1, tile={tile_value}]")
    if stride_value > tile_value:
        raise ValueError(f"supervision.stride must be in [1, tile={tile_value}] (tiles leave no gaps); got {stride!r}")
    try:
        frac = float(pos_min_frac)
    except (TypeError, ValueError):
        frac = math.nan
    if not 0.0 < frac <= 1.0:  # also rejects NaN
        raise ValueError(
            f"supervision.pos_min_frac must be in (0, 1] (fraction of a nucleus inside a positive tile); "
            f"got {pos_min_frac!r}"
        )
    min_px = _positive_int(pos_min_px, "supervision.pos_min_px", "an int >= 1 (nucleus pixels inside the tile)")
    return tile_value, stride_value, frac, min_px


def _positive_int(value, key: str, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{key} must be a positive int, {expected}; got {value!r}")
    return int(value)


# --- the tile rule ------------------------------------------------------------------------------------------------
def grid_starts(length: int, tile: int, stride: int) -> list[int]:
    """Top-left offsets 0, stride, 2 stride, ... of tiles fully inside `length`, plus a last one flush with the end
    (length - tile) when the stride grid does not reach it, so every pixel lies in some tile. Empty if tile > length.
    """
    if tile > length:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_labels(
    label: np.ndarray, tile: int, stride: int, pos_min_frac: float = 0.5, pos_min_px: int = 30
) -> np.ndarray:
    """Labelled tiles of one instance map as an int64 (N, 3) array of rows (x, y, label), row-major (y, then x).

    x, y: the tile's top-left column and row on the `grid_starts` grid of both axes; label TILE_POSITIVE or
    TILE_NEGATIVE (module docstring). Tiles that are neither are not returned. A nucleus's area is its pixel count
    in the whole map, so a nucleus cut by the image border counts with its visible part only.
    """
    tile, stride, pos_min_frac, pos_min_px = validate_tile_params(tile, stride, pos_min_frac, pos_min_px)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map has shape {label.shape}; expected a 2-D instance map")
    label = label.astype(np.int64, copy=False)
    areas = np.bincount(label.ravel())
    rows = []
    for y in grid_starts(label.shape[0], tile, stride):
        for x in grid_starts(label.shape[1], tile, stride):
            inside = np.bincount(label[y : y + tile, x : x + tile].ravel(), minlength=len(areas))
            inside[0] = 0  # background
            if not inside.any():
                rows.append((x, y, TILE_NEGATIVE))
                continue
            enough = (inside >= pos_min_px) & (inside >= pos_min_frac * areas)
            if enough.any():
                rows.append((x, y, TILE_POSITIVE))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


# --- balancing (dataset level) ----------------------------------------------------------------------------------
def tile_fields(row) -> TileRow:
    """(image_id, x, y, size, label) of a row given as a tuple or as an object with those attributes (a Tile)."""
    if hasattr(row, "label") and hasattr(row, "image_id"):
        return str(row.image_id), int(row.x), int(row.y), int(row.size), int(row.label)
    image_id, x, y, size, tile_label = row
    return str(image_id), int(x), int(y), int(size), int(tile_label)


def _order_key(row) -> tuple:
    image_id, x, y, size, _ = tile_fields(row)
    return image_id, y, x, size


def balance_tiles(rows: Iterable, seed: int, min_negatives: int | None = None) -> list:
    """Seeded subsampling of the majority class down to the minority count. Rows are (image_id, x, y, size, label)
    tuples or objects with those attributes, returned as given; the kept ones are sorted by (image_id, y, x, size),
    so the result depends on the seed and the set of rows, not on their order.

    `min_negatives`: warn (`warn_if_few_negatives`) when the input holds fewer negatives. Raises ValueError when
    one class is empty (a classifier needs both).
    """
    ordered = sorted(rows, key=_order_key)
    if min_negatives is not None:
        warn_if_few_negatives(ordered, min_negatives)
    labels = [tile_fields(row)[4] for row in ordered]
    if any(value not in (TILE_NEGATIVE, TILE_POSITIVE) for value in labels):
        raise ValueError(f"tile labels must be {TILE_NEGATIVE} or {TILE_POSITIVE}; got {sorted(set(labels))}")
    positives = [row for row, value in zip(ordered, labels, strict=True) if value == TILE_POSITIVE]
    negatives = [row for row, value in zip(ordered, labels, strict=True) if value == TILE_NEGATIVE]
    if not positives or not negatives:
        raise ValueError(
            f"cannot balance tiles: {len(positives)} positives and {len(negatives)} negatives "
            "(check supervision.tile, supervision.pos_min_frac and supervision.pos_min_px)"
        )
    minority, majority = sorted((positives, negatives), key=len)
    rng = np.random.default_rng(int(seed))
    chosen = np.sort(rng.choice(len(majority), size=len(minority), replace=False))
    kept = minority + [majority[index] for index in chosen]
    return sorted(kept, key=_order_key)


def count_negatives(rows: Iterable) -> int:
    return sum(1 for row in rows if tile_fields(row)[4] == TILE_NEGATIVE)


def warn_if_few_negatives(rows: Iterable, min_negatives: int) -> bool:
    """Log a warning and return True when the (unbalanced) rows hold fewer than `min_negatives` negative tiles."""
    n_negatives = count_negatives(rows)
    if n_negatives >= min_negatives:
        return False
    log.warning(
        "only %d negative tiles (supervision.min_negatives=%d): the classifier sees few nucleus-free examples; "
        "try a smaller supervision.tile",
        n_negatives,
        min_negatives,
    )
    return True


# --- the cached CSV ---------------------------------------------------------------------------------------------
def format_tile_table(table: np.ndarray) -> str:
    """CSV text of an (N, 4) table of (x, y, size, label): header line, then one line per tile."""
    table = np.asarray(table, dtype=np.int64).reshape(-1, len(TILE_CSV_HEADER))
    lines = [",".join(TILE_CSV_HEADER)] + [",".join(str(int(v)) for v in row) for row in table]
    return "\n".join(lines) + "\n"


def read_tile_table(path: str | Path) -> np.ndarray:
    """The (N, 4) int64 table (x, y, size, label) of one cached CSV; ValueError on another header or bad lines."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or tuple(lines[0].split(",")) != TILE_CSV_HEADER:
        raise ValueError(f"tile table {path} must start with the header {','.join(TILE_CSV_HEADER)}")
    try:
        rows = [[int(value) for value in line.split(",")] for line in lines[1:] if line]
    except ValueError as err:
        raise ValueError(f"tile table {path} has a non-integer value: {err}") from err
    if any(len(row) != len(TILE_CSV_HEADER) for row in rows):
        raise ValueError(f"tile table {path} has a line without {len(TILE_CSV_HEADER)} values")
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(TILE_CSV_HEADER))


def load_tiles(paths: Mapping[str, str | Path]) -> list[TileRow]:
    """All rows (image_id, x, y, size, label) of the cached CSVs, in the order of `paths` then of each file."""
    return [
        (str(image_id), int(x), int(y), int(size), int(tile_label))
        for image_id, path in paths.items()
        for x, y, size, tile_label in read_tile_table(path)
    ]


class ImageLevelLabels(CachedWeakLabels):
    """Image-level supervision (Cyclic): one CSV of labelled tiles per training image, under
    `<cache_dir>/image_level/<key>/`. `kind` is the config's `supervision.kind` ("image_label"), which the method's
    `supervision_kinds` is compared with. `seed` is kept for the caller's `balance_tiles`; it changes no cached file
    and is therefore not part of the cache key."""

    kind: ClassVar[str] = "image_label"
    target_format: ClassVar[str] = "tiles"
    reads_ground_truth: ClassVar[bool] = True
    name: ClassVar[str] = "image_level"
    version: ClassVar[str] = "1"
    suffix: ClassVar[str] = ".csv"

    def __init__(
        self,
        cache_dir: str | Path,
        tile: int = 96,
        stride: int = 48,
        pos_min_frac: float = 0.5,
        pos_min_px: int = 30,
        seed: int = 0,
    ) -> None:
        super().__init__(cache_dir=cache_dir, seed=seed)
        self.tile, self.stride, self.pos_min_frac, self.pos_min_px = validate_tile_params(
            tile, stride, pos_min_frac, pos_min_px
        )

    def params(self) -> dict:
        return {
            "tile": self.tile,
            "stride": self.stride,
            "pos_min_frac": self.pos_min_frac,
            "pos_min_px": self.pos_min_px,
        }

    def key_params(self) -> dict:
        return self.params()  # the tiles do not depend on the seed: one cache for every seed

    def generate(self, image_id: str, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N, 4) int64 table (x, y, size, label) of the image's labelled tiles; deterministic, `rng` unused."""
        rows = tile_labels(label, self.tile, self.stride, self.pos_min_frac, self.pos_min_px)
        sizes = np.full((len(rows), 1), self.tile, dtype=np.int64)
        return np.concatenate([rows[:, :2], sizes, rows[:, 2:]], axis=1)

    def write(self, path: Path, array: np.ndarray) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(format_tile_table(array))

    def __repr__(self) -> str:
        return (
            f"ImageLevelLabels(tile={self.tile}, stride={self.stride}, pos_min_frac={self.pos_min_frac}, "
            f"pos_min_px={self.pos_min_px}, seed={self.seed}, cache_dir='{self.cache_dir}')"
        )

