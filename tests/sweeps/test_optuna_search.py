"""The Optuna driver runs trials through the real train task, records them in SQLite and resumes the study."""

from __future__ import annotations

import math

import optuna
import pytest

from cellseg.sweeps.optuna_search import run_search


def overrides(tmp_path, n_trials: int) -> list[str]:
    return ["debug=smoke", "hparams_search=supervised_lr", "data.val_holdout=1", "test=false",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "model=unet_small",
            f"hparams_search.n_trials={n_trials}", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]


def test_trials_are_recorded_and_the_study_resumes(tmp_path):
    study = run_search(overrides(tmp_path, 2))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(math.isfinite(t.value) and 0 <= t.value <= 1 for t in study.trials)
    assert {"method.module.optimizer.lr", "method.module.dice_weight"} <= set(study.trials[0].params)
    assert (tmp_path / "sweeps" / "supervised_lr" / "trial_0001" / "checkpoints" / "last.ckpt").is_file()
    resumed = run_search(overrides(tmp_path, 3))
    assert len(resumed.trials) == 3


def test_search_without_space_is_refused(tmp_path):
    with pytest.raises(ValueError, match="hparams_search=<name>"):
        run_search(["debug=smoke", f"paths.log_dir={tmp_path}"])
