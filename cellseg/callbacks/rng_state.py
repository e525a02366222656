"""Checkpoints carry every rank's global random state, so a resumed fit draws what the uninterrupted one drew.

The data stream is seeded on its own (`cellseg.data.sampling`); what is left on the global generators is what
training steps draw themselves (dropout, batch-level rescaling). `on_save_checkpoint` runs on every rank; the
states of all ranks are gathered into the checkpoint rank 0 writes. A resumed fit restores its rank's states at
its first training batch, the point where the uninterrupted run continued after that checkpoint was saved.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "rng_states"


def collect_rng_states() -> dict:
    """torch (CPU and CUDA), numpy and `random` states as tensors and plain values (loadable with weights_only)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    python_version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": python_version, "state": list(python_state), "gauss": python_gauss},
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))


def gather_across_ranks(states: dict) -> list[dict]:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, states)
        return gathered
    return [states]


class RandomStateCheckpoint(pl.Callback):
    """Saves the random states of every rank with each checkpoint and puts them back when a fit resumes."""

    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = gather_across_ranks(collect_rng_states())

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        per_rank = checkpoint.get(CHECKPOINT_KEY)
        if not per_rank:
            log.warning("the checkpoint holds no random states: the resumed run will not repeat the original one")
            return
        rank = trainer.global_rank
        if len(per_rank) != trainer.world_size:
            log.warning("the checkpoint holds random states of %d ranks, this run has %d: rank %d takes rank %d's",
                        len(per_rank), trainer.world_size, rank, rank % len(per_rank))
        self._pending = per_rank[rank % len(per_rank)]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None
