"""Pruning: the study's pruner (`hparams_search.pruner`, e.g. Optuna's MedianPruner) stops a bad trial early.

Optuna's own Lightning callback (optuna-integration) is written for the unified `lightning` package, which is a
different class hierarchy from this project's `pytorch_lightning` (a Trainer refuses its callbacks), and under
DDP it needs an RDB storage. This callback does the same work through Optuna's pruner API: at every validation
rank 0 reports the monitored value as the trial's intermediate value at the global step and asks the pruner;
the answer is broadcast so every rank stops together. A pruned trial ends its training normally (its last
checkpoint is written) and the driver records it as PRUNED.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
import pytorch_lightning as pl

_ACTIVE: dict = {"trial": None, "pruned_at": None}


@contextmanager
def pruning_trial(trial: optuna.Trial | None) -> Iterator[dict]:
    """Make `trial` the one the callback reports to while a trial trains (None on ranks other than 0)."""
    _ACTIVE.update(trial=trial, pruned_at=None)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE.update(trial=None)


class TrialPruning(pl.Callback):
    """Added by the search driver as `callbacks.trial_pruning` when the study has a pruner."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        trial = _ACTIVE["trial"]
        if trainer.is_global_zero and trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                warnings.warn(f"pruning: {self.monitor} was not logged at this validation", stacklevel=1)
            else:
                trial.report(float(value), step=trainer.global_step)
                prune = trial.should_prune()
        if trainer.strategy.broadcast(prune):
            _ACTIVE["pruned_at"] = trainer.global_step
            trainer.should_stop = True
