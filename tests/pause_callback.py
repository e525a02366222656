"""A callback the resume tests add to a train.py subprocess (`+callbacks.pause=...`): it stops the run at a
given global step, says so in a marker file and waits to be killed."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class PauseAtStep(pl.Callback):
    """`where`: pause only in a trainer whose root folder path contains it (a pipeline's stage, e.g. detector_2)."""

    def __init__(self, step: int, marker: str, where: str | None = None) -> None:
        self.step, self.marker, self.where = int(step), Path(marker), where

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.where is not None and self.where not in str(trainer.default_root_dir):
            return
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(600)
