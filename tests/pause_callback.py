"""A callback the resume tests add to a train.py subprocess (`+callbacks.pause=...`): it stops the run at a
given global step, says so in a marker file and waits to be killed."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class PauseAtStep(pl.Callback):
    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = int(step), Path(marker)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(600)
