"""Rebuild the bundled sample (data/sample/MoNuSegSample) from a MoNuSeg copy in the common layout.

    python data/make_sample.py --src ../shared/data/MoNuSeg --out data/sample/MoNuSegSample

Crops of fixed positions (listed below) so the sample is reproducible byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skimage.segmentation import relabel_sequential

from cellseg.utils.io import read_image, read_label, write_image, write_label

CROP = 384
# (split, image id, top, left): one image per organ where possible; test crops come from the official test set.
CROPS = [
    ("train", "TCGA-18-5592-01Z-00-DX1", 300, 300),
    ("train", "TCGA-21-5784-01Z-00-DX1", 100, 500),
    ("train", "TCGA-A7-A13E-01Z-00-DX1", 500, 100),
    ("train", "TCGA-B0-5711-01Z-00-DX1", 300, 500),
    ("train", "TCGA-G9-6336-01Z-00-DX1", 100, 100),
    ("train", "TCGA-HE-7128-01Z-00-DX1", 500, 500),
    ("test", "TCGA-2Z-A9J9-01A-01-TS1", 300, 300),
    ("test", "TCGA-AC-A2FO-01A-01-TS1", 300, 300),
    ("test", "TCGA-EJ-A46H-01A-03-TSC", 300, 300),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="MoNuSeg folder in the common layout")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    args = parser.parse_args()
    for split, image_id, top, left in CROPS:
        image = read_image(args.src / split / "images" / f"{image_id}.png")
        label = read_label(args.src / split / "labels" / f"{image_id}.png")
        window = (slice(top, top + CROP), slice(left, left + CROP))
        crop_id = f"{image_id}_r{top}c{left}"
        write_image(args.out / split / "images" / f"{crop_id}.png", image[window])
        write_label(args.out / split / "labels" / f"{crop_id}.png", relabel_sequential(label[window])[0])
        print(f"{split}/{crop_id}")


if __name__ == "__main__":
    main()
