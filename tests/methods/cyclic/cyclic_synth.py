"""Helpers of the Cyclic pipeline tests: a tiny synthetic H&E-like dataset WITH training labels (image-level tile
labels are simulated from them) and the overrides of a tiny two-loop run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "coin"))
from coin_synth import disk_label, he_image  # noqa: E402

from cellseg.utils.io import write_image, write_label  # noqa: E402

SIZE = 128

# ResNet-18 networks, a few steps each, small tiles, crops and windows, native-resolution detector.
TINY = [
    "model=cyclic_r18", "model.classifier.output_stride=16", "model.detector.rpn_post_nms_test=200",
    "model.detector.rpn_post_nms_train=200", "model.detector.box_batch=32", "model.detector.detections=20",
    "supervision.tile=32", "supervision.stride=16", "supervision.input_size=32", "supervision.min_negatives=1",
    "method.classifier.steps=2", "method.classifier.batch_size=4", "method.held_out_tiles=0.2",
    "method.relevance.window=64", "method.relevance.overlap=16",
    "method.pseudo.min_area=10", "method.pseudo.max_area=2000", "method.pseudo.min_solidity=0.5",
    "method.detector.max_steps=2", "method.detector.crop=64", "method.detector.batch_size=2",
    "method.module.scale=1.0", "method.module.inference.tile=128",
    "method.module.inference.overlap=32", "method.module.scheduler.warmup_steps=1",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
]


def nuclei(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Disks in the left half only, so the right half gives nucleus-free (negative) tiles."""
    return [(int(rng.integers(12, SIZE - 12)), int(rng.integers(12, SIZE // 2 - 12)), int(rng.integers(5, 9)))
            for _ in range(6)]


def make_dataset(root: Path, n_train: int = 3, n_test: int = 1, seed: int = 0) -> Path:
    """<root>/Synth/{train,test}/{images,labels}."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for k in range(count):
            label = disk_label((SIZE, SIZE), nuclei(rng))
            write_image(root / "Synth" / split / "images" / f"{split}{k}.png", he_image(label, seed=k))
            write_label(root / "Synth" / split / "labels" / f"{split}{k}.png", label)
    return root


def train_overrides(root: Path, loops: int = 2) -> list[str]:
    """train.py overrides of a tiny Cyclic run on a synthetic dataset made under `root` (its own cache)."""
    data = make_dataset(root / "data")
    return ["method=cyclic", "data=sample", f"data.root={data}", "data.dataset=Synth", "data.num_workers=0", *TINY,
            f"method.loops={loops}", f"paths.cache_dir={root / 'cache'}"]
