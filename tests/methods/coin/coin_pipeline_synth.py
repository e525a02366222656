"""Helpers of the COIN pipeline tests: a tiny synthetic dataset (no training labels) and the composed config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from coin_synth import disk_label, he_image
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cellseg.utils.io import write_image, write_label
from cellseg.utils.project import set_project_root_env

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "configs")
set_project_root_env()

# A fresh ResNet-18 network at output stride 16, one step on 64 px crops, single-scale inference.
TINY = [
    "model.encoder=resnet18", "model.output_stride=16", "model.edge_head=false",
    "method.train.crop=64", "method.train.batch_size=2", "method.train.repeat=2", "method.train.max_steps=1",
    "method.module.rescale=null", "method.module.inference.scales=[1.0]", "method.module.inference.hflip=false",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
]


def random_disks(rng: np.random.Generator, size: int, count: int) -> list[tuple[int, int, int]]:
    return [(int(rng.integers(10, size - 10)), int(rng.integers(10, size - 10)), int(rng.integers(5, 9)))
            for _ in range(count)]


def make_dataset(root: Path, n_train: int = 2, n_test: int = 1, size: int = 96, seed: int = 0) -> Path:
    """<root>/Synth/{train,test}: H&E-like disks; the train split has NO labels folder (annotation-free)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for k in range(count):
            label = disk_label((size, size), random_disks(rng, size, 7))
            write_image(root / "Synth" / split / "images" / f"{split}{k}.png", he_image(label, seed=k))
            if split == "test":
                write_label(root / "Synth" / split / "labels" / f"{split}{k}.png", label)
    return root


def train_overrides(root: Path, n_train: int = 2, max_steps: int = 6, n_test: int = 1) -> list[str]:
    """train.py overrides of a tiny two-round COIN run (no cache) on a synthetic dataset made under `root`."""
    data = make_dataset(root / "data", n_train=n_train, n_test=n_test)
    return ["method=coin", "data=sample", f"data.root={data}", "data.dataset=Synth", "data.num_workers=0", *TINY,
            "method.rounds=2", f"method.train.max_steps={max_steps}", "method.cache=false"]


def compose_coin(tmp_path: Path, *overrides: str, data_root: Path | None = None, run: str = "run",
                 tiny: bool = True) -> DictConfig:
    """train.yaml with method=coin (+ TINY) on the synthetic dataset (or the given overrides), under tmp_path."""
    data = [] if data_root is None else ["data=sample", f"data.root={data_root}", "data.dataset=Synth"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["method=coin", "data.num_workers=0", *data, *(TINY if tiny else []),
                                                           *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / run)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg
