"""A COIN search trial on images without any label: it completes with the label-free objective."""

from __future__ import annotations

import optuna
from coin_pipeline_synth import train_overrides

from cellseg.sweeps.optuna_search import run_worker
from cellseg.tasks.compose import compose_config


def test_a_coin_trial_is_scored_by_prompt_agreement_without_labels(tmp_path):
    overrides = [*train_overrides(tmp_path, max_steps=1), "method.rounds=1", "hparams_search=coin",
                 "hparams_search.n_trials=1", "hparams_search.study_name=coin", f"paths.log_dir={tmp_path / 'logs'}",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config("search", [*overrides, "hparams_search.worker=0"], tmp_path / "worker")
    assert cfg.optimized_metric == "label_free/prompt_agreement" and cfg.test is False
    study = run_worker(cfg, overrides)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("error")
    assert 0.0 <= trial.value <= 1.0
    assert set(trial.params) == set(cfg.hparams_search.params)
    trial_dir = tmp_path / "logs" / "sweeps" / "coin" / "trial_0000"
    assert not list(trial_dir.glob("evaluate_*"))  # test=false: the test split is never scored
