"""Overlay PNGs of synthetic scribbles for a visual check: fg scribbles green, bg scribbles red, GT outlines faint.

    python benchmarks/scribble_overlays.py --out outputs/scribble_overlays            # defaults (see below)
    python benchmarks/scribble_overlays.py --dataset MoNuSeg --split train --n 5 --ratio 0.1 --out /tmp/ov

Defaults: 3 MoNuSeg train images and 3 DSB2018 stage1_train fluorescence images, ratio 0.3, seed 0. The scribbles
are the ones ScribbleLabels would cache for the same seed and ratio (same per-image generator). Counts per image
go to `<out>/summary.json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.segmentation import find_boundaries

from cellseg.data.layout import SplitLayout
from cellseg.data.weak import ScribbleLabels, synthesize_scribble
from cellseg.utils.io import read_image, read_label, write_image, write_json

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_SELECTIONS = (("MoNuSeg", "train", None), ("DSB2018", "stage1_train", "fluorescence"))
FG_COLOUR = np.array([0, 255, 0], dtype=np.float64)
BG_COLOUR = np.array([255, 0, 0], dtype=np.float64)
OUTLINE_COLOUR = np.array([255, 255, 0], dtype=np.float64)
OUTLINE_ALPHA = 0.35


def select_ids(layout: SplitLayout, n: int, modality: str | None) -> list[str]:
    """The first n ids (sorted) of the split, optionally only those of one modality in index.csv."""
    ids = layout.ids()
    if modality is not None:
        index = layout.index()
        column = next(
            (c for c in ("modality", "modality_guess") if index is not None and c in index.columns), None
        )
        if column is None:
            raise ValueError(
                f"{layout.index_csv} has no modality column; cannot select modality {modality!r}"
            )
        ids = [image_id for image_id in ids if index.loc[image_id, column] == modality]
    if not ids:
        raise ValueError(f"no image in {layout.dir} matches modality {modality!r}")
    return ids[:n]


def overlay(image: np.ndarray, label: np.ndarray, scribble: np.ndarray, thicken: int) -> np.ndarray:
    """RGB uint8: faint GT outlines, then background (red) and foreground (green) scribbles on top."""
    canvas = image.astype(np.float64)
    outline = find_boundaries(label, mode="inner")
    canvas[outline] = (1 - OUTLINE_ALPHA) * canvas[outline] + OUTLINE_ALPHA * OUTLINE_COLOUR
    for value, colour in ((0, BG_COLOUR), (1, FG_COLOUR)):
        pixels = scribble == value
        if thicken > 0:  # display only: makes 1-px scribbles visible on large images
            pixels = binary_dilation(pixels, iterations=thicken)
        canvas[pixels] = colour
    return canvas.round().astype(np.uint8)


def render(
    root: Path,
    dataset: str,
    split: str,
    modality: str | None,
    n: int,
    ratio: float,
    seed: int,
    out: Path,
    thicken: int,
) -> list[dict]:
    layout = SplitLayout.of(root, dataset, split)
    generator = ScribbleLabels(cache_dir=out, ratio=ratio, seed=seed)  # for its seeding; nothing is cached
    rows = []
    for image_id in select_ids(layout, n, modality):
        label = read_label(layout.label_path(image_id))
        scribble, info = synthesize_scribble(
            label,
            generator.ratio,
            generator.image_rng(image_id),
            ignore_index=generator.ignore_index,
            **generator.corner_params,
        )
        target = out / f"{dataset}_{split}_{image_id[:24]}_r{ratio:g}.png"
        write_image(target, overlay(read_image(layout.image_path(image_id)), label, scribble, thicken))
        rows.append({"dataset": dataset, "split": split, "id": image_id, "file": target.name, **info})
        print(f"{target.name}: {info}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data root in the common layout")
    parser.add_argument("--dataset", help="one dataset (default: 3 MoNuSeg train + 3 DSB2018 fluorescence)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--modality", help="keep only this modality of index.csv (e.g. fluorescence)")
    parser.add_argument("--n", type=int, default=3, help="images per dataset")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thicken", type=int, default=0, help="dilate scribbles by this many px for display")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    selections = [(args.dataset, args.split, args.modality)] if args.dataset else list(DEFAULT_SELECTIONS)
    rows = []
    for dataset, split, modality in selections:
        rows += render(
            args.root, dataset, split, modality, args.n, args.ratio, args.seed, args.out, args.thicken
        )
    write_json(args.out / "summary.json", {"ratio": args.ratio, "seed": args.seed, "images": rows})


if __name__ == "__main__":
    main()
