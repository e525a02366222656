"""In a SLURM job the pre-emption signal makes LastCheckpoint save last.ckpt at the end of the step, then the
handler that was there before (submitit's, which requeues) runs."""

from __future__ import annotations

import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from cellseg.callbacks.last_checkpoint import LAST_NAME, LastCheckpoint


class Requeued(Exception):
    """Stands for submitit's handler, which requeues the job and exits."""


class SignalAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR2)


def fit(tmp_path, *callbacks) -> None:
    trainer = pl.Trainer(max_steps=10, callbacks=list(callbacks), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=tmp_path)
    trainer.fit(BoringModel())


@pytest.fixture
def requeue_handler():
    calls: list[int] = []

    def requeue(signum, frame):
        calls.append(signum)
        raise Requeued

    previous = signal.signal(signal.SIGUSR2, requeue)
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_the_signal_saves_the_current_step_then_hands_over_to_the_requeue_handler(tmp_path, monkeypatch,
                                                                                   requeue_handler):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    with pytest.raises(Requeued):
        fit(tmp_path, SignalAtStep(3), LastCheckpoint(tmp_path, every_n_train_steps=0))
    assert requeue_handler == [signal.SIGUSR2]
    assert torch.load(tmp_path / LAST_NAME, weights_only=False)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR2).__name__ == "requeue"  # the earlier handler is back


def test_outside_slurm_the_signal_is_left_to_its_handler(tmp_path, monkeypatch, requeue_handler):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(Requeued):
        fit(tmp_path, SignalAtStep(3), LastCheckpoint(tmp_path, every_n_train_steps=0))
    assert not (tmp_path / LAST_NAME).exists()


def test_after_a_finished_fit_the_next_fit_of_the_process_still_hands_over(tmp_path, monkeypatch,
                                                                            requeue_handler):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    fit(tmp_path / "stage_1", LastCheckpoint(tmp_path / "stage_1", every_n_train_steps=0))  # a pipeline's stage
    assert signal.getsignal(signal.SIGUSR2).__name__ == "requeue"
    with pytest.raises(Requeued):
        fit(tmp_path / "stage_2", SignalAtStep(2), LastCheckpoint(tmp_path / "stage_2", every_n_train_steps=0))
    assert requeue_handler == [signal.SIGUSR2]
    assert torch.load(tmp_path / "stage_2" / LAST_NAME, weights_only=False)["global_step"] == 2
