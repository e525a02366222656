"""`last.ckpt` is always the newest state of a fit: refreshed every N optimiser steps and when training ends.

Lightning's ModelCheckpoint refreshes `last.ckpt` only when it saves a top-k checkpoint and, at the end of
training, only if it never saved one, so the steps after its last save could be missing from `last.ckpt`.
This callback owns `last.ckpt` instead. Saved mid-epoch, a checkpoint holds the loop position; with the seeded
data stream and the saved random states, a fit resumed from it repeats the uninterrupted run exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

LAST_NAME = "last.ckpt"


class LastCheckpoint(pl.Callback):
    """Writes `<dirpath>/last.ckpt` every `every_n_train_steps` steps (0: only at the end) and at the end of fitting."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 100) -> None:
        if int(every_n_train_steps) < 0:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}; expected >= 0 (0 = only at the end)")
        self.dirpath, self.every = Path(dirpath), int(every_n_train_steps)
        self._saved_at_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / LAST_NAME

    def save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_at_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step != self._saved_at_step:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_at_step:
            self.save(trainer)
