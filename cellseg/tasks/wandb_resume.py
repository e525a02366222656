"""A resumed run continues its W&B run: the run id travels inside every checkpoint.

`WandbRunId` writes `checkpoint["wandb_run_id"]`; `build_loggers` reads it back from the checkpoint a run resumes
from and gives it to the WandbLogger (`id=..., resume="allow"`), so a requeued SLURM job or `ckpt_path=last`
appends to the same curves instead of opening a new run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from cellseg.utils.checkpoints import read_checkpoint

log = logging.getLogger(__name__)
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


def is_wandb_node(node) -> bool:
    return bool(node) and str(node.get("_target_", "")).endswith("WandbLogger")


def build_loggers(logger_cfg: DictConfig | None, ckpt_path: str | None) -> list:
    """The configured loggers; a WandbLogger resumes the run id stored in `ckpt_path` when there is one."""
    if not logger_cfg:
        return []
    run_id = stored_run_id(ckpt_path) if any(is_wandb_node(n) for n in logger_cfg.values()) else None
    loggers = []
    for node in logger_cfg.values():
        if not node or "_target_" not in node:
            continue
        if is_wandb_node(node) and run_id:
            log.info(f"resuming W&B run {run_id} stored in {ckpt_path}")
            loggers.append(hydra.utils.instantiate(node, id=run_id, resume="allow"))
        else:
            loggers.append(hydra.utils.instantiate(node))
    return loggers


def with_run_id_callback(callbacks: list, loggers: list) -> list:
    """Adds `WandbRunId` when a WandbLogger is present (and it is not already there)."""
    if any(isinstance(lg, WandbLogger) for lg in loggers) and not any(isinstance(c, WandbRunId) for c in callbacks):
        return [*callbacks, WandbRunId()]
    return callbacks
