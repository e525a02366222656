"""A resumed run continues its W&B run: the run id travels inside every checkpoint.

`WandbRunId` writes `checkpoint["wandb_run_id"]`; the trainer builder (`cellseg.pipeline.trainer`) reads it back
from the checkpoint a run resumes from and gives it to the WandbLogger (`id=..., resume="allow"`), so a requeued
SLURM job or `ckpt_path=last` appends to the same curves instead of opening a new run.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from cellseg.utils.checkpoints import read_checkpoint

CHECKPOINT_KEY = "wandb_run_id"


class WandbRunId(pl.Callback):
    """Stores the id of the trainer's W&B run in each checkpoint it saves."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint[CHECKPOINT_KEY] = logger.version


def stored_run_id(ckpt_path: str | Path | None) -> str | None:
    """The W&B run id saved in a checkpoint (None without one or for checkpoints of runs without W&B); an
    unreadable checkpoint raises the CheckpointError of `read_checkpoint`, naming the file."""
    if ckpt_path is None:
        return None
    checkpoint = read_checkpoint(ckpt_path, required=(), weights_only=True, mmap=True)
    run_id = checkpoint.get(CHECKPOINT_KEY)
    return str(run_id) if run_id else None
