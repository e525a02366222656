"""Helpers of the S2L tests (a unique module name, unlike conftest): a tiny smp-shaped network, modules, batches."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from cellseg.data import NucleiDataModule
from cellseg.data.weak import ScribbleLabels
from cellseg.methods.s2l.module import Scribble2Label
from cellseg.utils.ignore import IGNORE_CLASS

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE = REPO_ROOT / "data" / "sample"
IGNORE = IGNORE_CLASS


class TinyNet(nn.Module):
    """encoder / decoder / segmentation_head like an smp model, a few hundred parameters, 2 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1)
        self.decoder = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.segmentation_head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


def make_module(seed: int = 0, **options) -> Scribble2Label:
    torch.manual_seed(seed)
    defaults = dict(
        optimizer=partial(torch.optim.RAdam, lr=3e-3, weight_decay=5e-5, decoupled_weight_decay=True),
        scheduler=None,
        ignore_index=IGNORE,
        inference={"tile": 512, "overlap": 32, "batch_size": 1},
        log_images=0,
    )
    return Scribble2Label(TinyNet(), **{**defaults, **options})



def sample_datamodule(cache: Path, val_holdout: int = 0) -> NucleiDataModule:
    """Two training images of the bundled sample, 32 px crops: one step per epoch."""
    return NucleiDataModule(name="sample", root=str(SAMPLE), dataset="MoNuSegSample", val_holdout=val_holdout,
                            max_images=2, crop=32, crops_per_image=1, batch_size=2, num_workers=0,
                            weak_labels=ScribbleLabels(cache_dir=cache, ratio=0.3))


def fit(module: Scribble2Label, datamodule: NucleiDataModule, max_epochs: int, callbacks=(), ckpt_path=None):
    datamodule.configure_targets(module.train_target, module.ignore_index)
    checkpointing = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, callbacks=list(callbacks),
                         enable_checkpointing=checkpointing, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=datamodule.weak_labels.cache_dir.parent)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def make_batch(n: int = 2, size: int = 16, seed: int = 0) -> dict:
    """Random images, a scribble target (fg stripe, bg stripe, rest unlabelled), identity crop geometry."""
    rng = np.random.default_rng(seed)
    target = np.full((n, size, size), IGNORE, dtype=np.int64)
    target[:, 2:4, :] = 1
    target[:, -4:-2, :] = 0
    return {
        "image": torch.from_numpy(rng.normal(size=(n, 3, size, size)).astype(np.float32)),
        "target": torch.from_numpy(target),
        "geometry": torch.tensor([[0, 0, size, 0, 0, 0]] * n),
        "id": [f"img{k}" for k in range(n)],
        "index": torch.arange(n),
    }


def load_compose_config():
    """`compose_config` of tests/tasks/conftest.py (the real configs, written under a temporary folder)."""
    spec = importlib.util.spec_from_file_location("tasks_conftest_for_s2l", REPO_ROOT / "tests" / "tasks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compose_config


class RecordingImages:
    """Whole normalised images of different sizes; remembers which indices were read."""

    def __init__(self, n: int = 5) -> None:
        generator = torch.Generator().manual_seed(7)
        self.items = [{"id": f"img{k}", "image": torch.randn(3, 20 + 3 * k, 24 + k, generator=generator)}
                      for k in range(n)]
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        self.read.append(index)
        return self.items[index]


def ema_after_updates(epochs: tuple[int, ...] = (0, 1)) -> tuple[dict, list[int]]:
    """Scribble2Label.run_ema_update on RecordingImages (under whatever process group is initialised)."""
    module = make_module(seed=0, ema_period=1, alpha=0.2)
    images = RecordingImages()
    from cellseg.methods.s2l.ema_maps import EmaMaps

    module.ema = EmaMaps.zeros([d["id"] for d in images.items], [tuple(d["image"].shape[1:]) for d in images.items])
    module._ema_source = images
    for epoch in epochs:
        module.run_ema_update(epoch)
    return module.ema.state_dict(), images.read


def ddp_ema_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One gloo rank of the DDP test: update the EMA maps twice, save them and the images this rank predicted."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        state, read = ema_after_updates()
        torch.save({"state": state, "read": read}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
