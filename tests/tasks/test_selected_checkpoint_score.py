"""A run that keeps its best checkpoint reports the monitor's value at that checkpoint, not at the last validation."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.demos.boring_classes import BoringModel

from cellseg.tasks.train import selected_checkpoint_score

SCORES = (0.3, 0.9, 0.5)  # validation 2 is the best, validation 3 the last


class ScriptedScore(BoringModel):
    def on_validation_epoch_end(self) -> None:
        self.log("val/score", torch.tensor(SCORES[self.current_epoch]))


def fit(tmp_path) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=len(SCORES), limit_train_batches=2, limit_val_batches=1, logger=False,
                         callbacks=[ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max")],
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(ScriptedScore())
    return trainer


def test_the_best_checkpoints_score_replaces_the_last_validations(tmp_path):
    trainer = fit(tmp_path)
    assert float(trainer.callback_metrics["val/score"]) == pytest.approx(SCORES[-1])
    best = OmegaConf.create({"method": {"selection": "best"}})
    assert selected_checkpoint_score(best, trainer) == {"val/score": pytest.approx(max(SCORES))}


def test_a_run_that_keeps_its_last_checkpoint_reports_nothing_more(tmp_path):
    last = OmegaConf.create({"method": {"selection": "last"}})
    assert selected_checkpoint_score(last, fit(tmp_path)) == {}
