"""Image-level tile labels (docs/methods/cyclic.md#tile-labels): the tile rule on a hand-made map, balancing, the CSV cache, config."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cellseg.data.weak import ImageLevelLabels
from cellseg.data.weak.image_level import (
    balance_tiles,
    grid_starts,
    load_tiles,
    read_tile_table,
    tile_labels,
    warn_if_few_negatives,
)

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "supervision" / "image_label.yaml"


@pytest.fixture
def strip() -> np.ndarray:
    """10 x 50 map cut by tile 10 / stride 10 into five tiles x = 0, 10, 20, 30, 40:

    - x=0: nucleus 1 (4 x 4 = 16 px) fully inside;
    - x=10: empty;
    - x=20 / x=30: nucleus 2 (4 rows x cols 26..35 = 40 px) with 16 px (40 %) in x=20 and 24 px (60 %) in x=30;
    - x=40: nucleus 3, a 2 x 2 fragment (4 px, 100 % inside).
    """
    label = np.zeros((10, 50), dtype=np.int32)
    label[3:7, 3:7] = 1
    label[3:7, 26:36] = 2
    label[4:6, 44:46] = 3
    return label


def as_dict(rows: np.ndarray) -> dict[int, int]:
    assert np.all(rows[:, 1] == 0)
    return {int(x): int(value) for x, _, value in rows}


def test_tile_rule_on_a_hand_made_map(strip):
    rows = tile_labels(strip, tile=10, stride=10, pos_min_frac=0.5, pos_min_px=5)
    assert rows.dtype == np.int64 and rows.shape == (3, 3)
    # fully inside -> 1; empty -> 0; 40 % -> dropped; 60 % (24 px) -> 1; 4 px fragment < pos_min_px -> dropped
    assert as_dict(rows) == {0: 1, 10: 0, 30: 1}


def test_tile_rule_thresholds_move_the_borderline_tiles(strip):
    assert as_dict(tile_labels(strip, 10, 10, pos_min_frac=0.4, pos_min_px=4)) == {0: 1, 10: 0, 20: 1, 30: 1, 40: 1}
    # 24 px inside is not enough for pos_min_px 25, 16 px not enough for 17
    assert as_dict(tile_labels(strip, 10, 10, pos_min_frac=0.5, pos_min_px=25)) == {10: 0}
    assert as_dict(tile_labels(strip, 10, 10, pos_min_frac=0.5, pos_min_px=17)) == {10: 0, 30: 1}
    assert as_dict(tile_labels(strip, 10, 10, pos_min_frac=0.5, pos_min_px=16)) == {0: 1, 10: 0, 30: 1}


def test_grid_adds_a_last_tile_flush_with_the_border():
    assert grid_starts(20, 10, 10) == [0, 10]
    assert grid_starts(25, 10, 10) == [0, 10, 15]
    assert grid_starts(20, 10, 5) == [0, 5, 10]
    assert grid_starts(10, 10, 5) == [0]
    assert grid_starts(9, 10, 5) == []
    rows = tile_labels(np.zeros((12, 25), dtype=np.int32), tile=10, stride=10)
    assert rows.tolist() == [[0, 0, 0], [10, 0, 0], [15, 0, 0], [0, 2, 0], [10, 2, 0], [15, 2, 0]]


def rows_of(n_pos: int, n_neg: int, image_id: str = "a") -> list[tuple]:
    return [(image_id, 10 * i, 0, 10, 1) for i in range(n_pos)] + [
        (image_id, 10 * i, 10, 10, 0) for i in range(n_neg)
    ]


def test_balancing_counts_and_determinism():
    rows = rows_of(3, 7, "a") + rows_of(1, 4, "b")
    kept = balance_tiles(rows, seed=0)
    assert sum(r[4] == 1 for r in kept) == sum(r[4] == 0 for r in kept) == 4
    assert {r for r in rows if r[4] == 1} <= set(kept)  # the minority class is kept whole
    assert kept == sorted(kept, key=lambda r: (r[0], r[2], r[1]))
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    assert balance_tiles(shuffled, seed=0) == kept
    assert any(balance_tiles(rows, seed=s) != kept for s in range(1, 6))
    # positives in the majority are subsampled the same way
    flipped = balance_tiles(rows_of(6, 2), seed=3)
    assert sum(r[4] == 1 for r in flipped) == sum(r[4] == 0 for r in flipped) == 2


def test_balancing_takes_objects_and_warns_with_min_negatives(caplog):
    @dataclass(frozen=True)
    class Tile:
        image_id: str
        x: int
        y: int
        size: int
        label: int

    rows = rows_of(3, 7, "a")
    tiles = [Tile(*row) for row in rows]
    with caplog.at_level(logging.WARNING, logger="cellseg.data.weak.image_level"):
        kept = balance_tiles(tiles, seed=0, min_negatives=200)
    assert all(isinstance(t, Tile) for t in kept)
    assert [tuple(vars(t).values()) for t in kept] == balance_tiles(rows, seed=0)
    assert "only 7 negative tiles" in caplog.text


def test_balancing_needs_both_classes():
    with pytest.raises(ValueError, match="0 negatives"):
        balance_tiles(rows_of(3, 0), seed=0)


def test_few_negatives_warning_names_the_setting(caplog):
    with caplog.at_level(logging.WARNING, logger="cellseg.data.weak.image_level"):
        assert warn_if_few_negatives(rows_of(5, 3), min_negatives=200) is True
    assert "only 3 negative tiles" in caplog.text and "supervision.min_negatives=200" in caplog.text
    caplog.clear()
    assert warn_if_few_negatives(rows_of(5, 3), min_negatives=3) is False
    assert caplog.text == ""


def test_cache_round_trip_without_the_masks(make_layout, strip, tmp_path):
    labels = {"s1": strip, "s2": np.zeros((10, 20), dtype=np.int32)}
    layout = make_layout(labels)
    generator = ImageLevelLabels(cache_dir=tmp_path / "cache", tile=10, stride=10, pos_min_px=5)
    paths = generator.prepare(layout, ["s1", "s2"])
    assert list(paths) == ["s1", "s2"]
    assert paths["s1"].suffix == ".csv" and paths["s1"].parent.parent == tmp_path / "cache" / "image_level"
    assert paths["s1"].read_text() == "x,y,size,label\n0,0,10,1\n10,0,10,0\n30,0,10,1\n"
    table = generator.read_target(paths["s1"])
    assert table.dtype == np.int64 and table.tolist() == [[0, 0, 10, 1], [10, 0, 10, 0], [30, 0, 10, 1]]
    assert np.array_equal(read_tile_table(paths["s2"]), [[0, 0, 10, 0], [10, 0, 10, 0]])
    assert load_tiles(paths) == [
        ("s1", 0, 0, 10, 1), ("s1", 10, 0, 10, 0), ("s1", 30, 0, 10, 1), ("s2", 0, 0, 10, 0), ("s2", 10, 0, 10, 0)
    ]
    assert generator.verify(layout, ["s1", "s2"]) == []

    # another seed shares the cache (the tiles do not depend on it) and reuses it without generating
    reseeded = ImageLevelLabels(cache_dir=tmp_path / "cache", tile=10, stride=10, pos_min_px=5, seed=7)
    reseeded.generate = None  # would fail if called
    assert reseeded.prepare(layout, ["s1", "s2"]) == paths
    # a changed rule parameter gives another folder
    other = ImageLevelLabels(cache_dir=tmp_path / "cache", tile=10, stride=5, pos_min_px=5).prepare(layout, ["s1"])
    assert other["s1"].parent != paths["s1"].parent

    # the masks are never needed again once the tables are cached: the rows load from the CSVs alone
    shutil.rmtree(layout.labels_dir)
    assert load_tiles(paths)[0] == ("s1", 0, 0, 10, 1)


def test_empty_table_round_trip(tmp_path):
    generator = ImageLevelLabels(cache_dir=tmp_path)
    table = generator.generate("tiny", np.zeros((8, 8), dtype=np.int32), np.random.default_rng(0))
    assert table.shape == (0, 4)
    generator.write(tmp_path / "tiny.csv", table)
    assert (tmp_path / "tiny.csv").read_text() == "x,y,size,label\n"
    assert read_tile_table(tmp_path / "tiny.csv").shape == (0, 4)
    (tmp_path / "bad.csv").write_text("x,y,label\n0,0,1\n")
    with pytest.raises(ValueError, match="header x,y,size,label"):
        read_tile_table(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"tile": 0}, "supervision.tile"),
        ({"tile": 9.5}, "supervision.tile"),
        ({"stride": 0}, "supervision.stride"),
        ({"tile": 32, "stride": 48}, "supervision.stride"),
        ({"pos_min_frac": 0.0}, "supervision.pos_min_frac"),
        ({"pos_min_frac": 1.5}, "supervision.pos_min_frac"),
        ({"pos_min_frac": float("nan")}, "supervision.pos_min_frac"),
        ({"pos_min_px": 0}, "supervision.pos_min_px"),
    ],
)
def test_bad_parameters_raise(kwargs, key, tmp_path):
    with pytest.raises(ValueError, match=key):
        ImageLevelLabels(cache_dir=tmp_path, **kwargs)
    with pytest.raises(ValueError, match=key):
        tile_labels(np.zeros((4, 4), dtype=np.int32), **{"tile": 96, "stride": 48, **kwargs})


def test_config_builds_the_generator(tmp_path):
    root = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "supervision": OmegaConf.load(CONFIG)})
    generator = instantiate(root.supervision.generator)
    assert type(generator) is ImageLevelLabels
    assert root.supervision.kind == generator.kind == "image_label" and generator.target_format == "tiles"
    assert (generator.tile, generator.stride, generator.pos_min_frac, generator.pos_min_px) == (96, 48, 0.5, 30)
    assert generator.seed == 0 and generator.cache_dir == tmp_path / "weak_labels"
    assert (root.supervision.balance, root.supervision.min_negatives, root.supervision.input_size) == (True, 200, 224)
    OmegaConf.update(root, "supervision.tile", 64)
    assert instantiate(root.supervision.generator).tile == 64
