"""Scribble2Label's DSB2018 split: per modality, a seeded shuffled 5-fold; fold 4 test, fold 0 val, folds 1-3 train.

S2L used an unseeded KFold; here the shuffle comes from a numpy Generator seeded by a stable hash of
(seed, modality) and the result is persisted as `configs/data/splits/s2l_602020_seed<k>.csv` (id, modality, split),
so nothing is split at random at run time. `python -m cellseg.data.splits --root ../shared/data --seed 0`
regenerates the file for DSB2018 stage1_train.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cellseg.data.layout import SplitLayout
from cellseg.data.modality import assign_modalities
from cellseg.utils.hashing import stable_seed
from cellseg.utils.io import atomic_path

N_FOLDS = 5
FOLD_SPLITS = ("val", "train", "train", "train", "test")  # split of fold 0..4
SPLITS = ("train", "val", "test")
COLUMNS = ("id", "modality", "split")
SPLITS_DIR = Path(__file__).resolve().parents[2] / "configs" / "data" / "splits"


def split_file_name(seed: int) -> str:
    return f"s2l_602020_seed{seed}.csv"


def _as_pairs(ids_with_modality) -> list[tuple[str, str]]:
    if isinstance(ids_with_modality, pd.DataFrame):
        missing = [c for c in ("id", "modality") if c not in ids_with_modality.columns]
        if missing:
            raise ValueError(f"ids_with_modality lacks columns {missing}; expected 'id' and 'modality'")
        items = zip(ids_with_modality["id"], ids_with_modality["modality"], strict=True)
    elif isinstance(ids_with_modality, Mapping):
        items = ids_with_modality.items()
    else:
        items = ids_with_modality
    pairs = [(str(i), str(m)) for i, m in items]
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"image ids occur more than once: {duplicated[:5]}")
    return pairs


def s2l_split(ids_with_modality: Mapping[str, str] | pd.DataFrame | Iterable[tuple[str, str]], seed: int) -> pd.DataFrame:
    """DataFrame(id, modality, split): per modality, ids sorted, shuffled (stable seed), cut in 5 folds like
    sklearn's KFold (the first n % 5 folds get one more); fold 0 -> val, 1-3 -> train, 4 -> test."""
    by_modality: dict[str, list[str]] = {}
    for image_id, modality in _as_pairs(ids_with_modality):
        by_modality.setdefault(modality, []).append(image_id)
    rows = []
    for modality in sorted(by_modality):
        ids = np.array(sorted(by_modality[modality]))
        rng = np.random.default_rng(stable_seed("s2l_602020", seed, modality))
        for fold, members in enumerate(np.array_split(ids[rng.permutation(len(ids))], N_FOLDS)):
            rows += [(str(i), modality, FOLD_SPLITS[fold]) for i in members]
    return pd.DataFrame(sorted(rows), columns=list(COLUMNS))


def write_split_file(
    ids_with_modality: Mapping[str, str] | pd.DataFrame | Iterable[tuple[str, str]],
    seed: int,
    out_dir: str | os.PathLike = SPLITS_DIR,
) -> Path:
    """Write `<out_dir>/s2l_602020_seed<seed>.csv` atomically; returns its path."""
    path = Path(out_dir) / split_file_name(seed)
    frame = s2l_split(ids_with_modality, seed)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def dsb2018_modalities(root: str | os.PathLike, split: str = "stage1_train", seed: int = 0) -> dict[str, str]:
    """{id: modality} of a converted DSB2018 split: index.csv's `modality` column, else k-means on the images."""
    layout = SplitLayout.of(root, "DSB2018", split)
    index = layout.index()
    if index is not None and "modality" in index.columns and index["modality"].notna().all():
        return {str(i): str(m) for i, m in index["modality"].items()}
    # index.csv without a modality column (e.g. the shared copy's modality_guess only): name it from the images.
    return assign_modalities([layout.image_path(i) for i in layout.ids()], seed=seed)


def write_dsb2018_split_file(
    root: str | os.PathLike, seed: int = 0, out_dir: str | os.PathLike = SPLITS_DIR, split: str = "stage1_train"
) -> Path:
    """The S2L split file of `<root>/DSB2018/<split>` for `seed`."""
    return write_split_file(dsb2018_modalities(root, split), seed, out_dir)


def read_split_file(path: str | os.PathLike, split: str, modality: str | None = None) -> list[str]:
    """Sorted ids of `split` (train / val / test), optionally of one modality only."""
    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; expected one of {list(SPLITS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split file; expected a CSV with columns {', '.join(COLUMNS)} "
                                "(see cellseg.data.splits.write_split_file)")
    frame = pd.read_csv(path, dtype=str)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(COLUMNS)}")
    unknown = sorted(set(frame["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"{path}: unknown split names {unknown}; expected {list(SPLITS)}")
    if modality is not None:
        present = sorted(set(frame["modality"]))
        if modality not in present:
            raise ValueError(f"{path}: no image of modality {modality!r}; the file has {present}")
        frame = frame[frame["modality"] == modality]
    return sorted(frame.loc[frame["split"] == split, "id"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the S2L 60/20/20 split file of DSB2018 stage1_train.")
    parser.add_argument("--root", required=True, type=Path, help="data root holding DSB2018/stage1_train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=SPLITS_DIR)
    args = parser.parse_args(argv)
    print(write_dsb2018_split_file(args.root, args.seed, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
