"""`last.ckpt` is always the newest state of a fit: refreshed every N optimiser steps and when training ends.

Lightning's ModelCheckpoint refreshes `last.ckpt` only when it saves a top-k checkpoint and, at the end of
training, only if it never saved one, so the steps after its last save could be missing from `last.ckpt`.
This callback owns `last.ckpt` instead. Saved mid-epoch, a checkpoint holds the loop position; with the seeded
data stream and the saved random states, a fit resumed from it repeats the uninterrupted run exactly.

In a SLURM job, `preemption_signal` (submitit's SIGUSR2, sent `signal_delay_s` before a preemption or time-out
kill) makes it write `last.ckpt` at the end of the current step on every rank together, then hand the signal to
the handler that was there before (submitit's, which requeues the job); the requeued job resumes from it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl

LAST_NAME = "last.ckpt"


class LastCheckpoint(pl.Callback):
    """Writes `<dirpath>/last.ckpt` every `every_n_train_steps` steps (0: only at the end) and at the end of fitting."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 100,
                 preemption_signal: str | None = "USR2") -> None:
        if int(every_n_train_steps) < 0:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}; expected >= 0 (0 = only at the end)")
        if preemption_signal is not None and not hasattr(signal, f"SIG{preemption_signal}"):
            raise ValueError(f"preemption_signal={preemption_signal!r}: not a signal name (e.g. USR2)")
        self.dirpath, self.every = Path(dirpath), int(every_n_train_steps)
        self.preemption_signal = preemption_signal
        self._signal_number = getattr(signal, f"SIG{preemption_signal}") if preemption_signal else None
        self._saved_at_step: int | None = None
        self._signalled: tuple | None = None  # (signum, frame) of a preemption signal not yet acted on
        self._previous_handler = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not at on_fit_start: Lightning records the handlers after that hook and puts them back at teardown,
        # which would leave this callback's handler installed after a hand-over.
        if self._signal_number is not None and "SLURM_JOB_ID" in os.environ and \
                threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(self._signal_number, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._signalled = (signum, frame)

    def _act_on_signal(self, trainer: pl.Trainer) -> None:
        """Every rank agrees (one all-reduce) before the collective save; then the earlier handler runs."""
        if self._previous_handler is None:
            return
        if not trainer.strategy.reduce_boolean_decision(self._signalled is not None, all=False):
            return
        self.save(trainer)
        signum, frame = self._signalled or (self._signal_number, None)
        previous, self._signalled = self._previous_handler, None
        signal.signal(self._signal_number, previous)
        self._previous_handler = None
        if callable(previous):
            previous(signum, frame)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous_handler is not None:
            signal.signal(self._signal_number, self._previous_handler)
            self._previous_handler = None

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
        self._act_on_signal(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_at_step:
            self.save(trainer)
