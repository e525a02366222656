"""A Cyclic search trial: it completes with the held-out tile accuracy (image-level labels) as its objective."""

from __future__ import annotations

import optuna
from cyclic_synth import train_overrides

from cellseg.sweeps.optuna_search import run_worker
from cellseg.tasks.compose import compose_config


def test_a_cyclic_trial_is_scored_by_held_out_tile_accuracy(tmp_path):
    overrides = [*train_overrides(tmp_path, loops=1), "hparams_search=cyclic", "hparams_search.n_trials=1",
                 "hparams_search.study_name=cyclic", f"paths.log_dir={tmp_path / 'logs'}"]
    cfg = compose_config("search", [*overrides, "hparams_search.worker=0"], tmp_path / "worker")
    assert cfg.optimized_metric == "val/tile_accuracy" and cfg.test is False
    study = run_worker(cfg, overrides)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("error")
    assert 0.0 <= trial.value <= 1.0
    assert set(trial.params) == set(cfg.hparams_search.params)
    trial_dir = tmp_path / "logs" / "sweeps" / "cyclic" / "trial_0000"
    assert not list(trial_dir.glob("evaluate_*"))  # test=false: the test split is never scored
