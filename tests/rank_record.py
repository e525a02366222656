"""A callback the DDP sweep test adds to each trial (`+callbacks.rank_record=...`): every rank writes what it
trained with (world size, optimiser values, steps) and a checksum of its final weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch


class RecordRank(pl.Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        group = trainer.optimizers[0].param_groups[0]
        weights = torch.cat([p.detach().flatten().double() for p in pl_module.parameters()])
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "lr": group["initial_lr"]
                  if "initial_lr" in group else group["lr"], "weight_decay": group["weight_decay"],
                  "global_step": trainer.global_step, "trial_dir": str(trainer.default_root_dir),
                  "weights_sum": float(weights.sum()), "weights_abs_sum": float(weights.abs().sum())}
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{Path(trainer.default_root_dir).name}_rank{trainer.global_rank}.json"
        (self.folder / name).write_text(json.dumps(record))
