"""The search driver: workers share one journal study, trials are neither lost nor run twice, failures are kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import open_dict
from run_helpers import REPO_ROOT, environment, kill_when_marked

from cellseg.pipeline.checks import ConfigError
from cellseg.sweeps.optuna_search import run_worker
from cellseg.sweeps.report import exported_experiment, load_study
from cellseg.tasks.compose import compose_config

TINY = ["experiment=supervised_unet_sample", "debug=smoke", "hparams_search=supervised", "data.val_holdout=1",
        "trainer.max_steps=3", "trainer.val_check_interval=3", "hparams_search.pruner=null"]


def tiny(tmp_path: Path, n_trials: int) -> list[str]:
    return [*TINY, f"hparams_search.n_trials={n_trials}", f"paths.log_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}", "hparams_search.study_name=tiny"]


def worker_command(worker: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "cellseg.sweeps.optuna_search", f"hparams_search.worker={worker}", *overrides]


def test_two_workers_share_a_study_and_a_killed_worker_finishes_its_trial(tmp_path):
    overrides = tiny(tmp_path, 4)
    marker = tmp_path / "paused"
    pause = ["+callbacks.pause._target_=pause_callback.PauseAtStep", "+callbacks.pause.step=1",
             f"+callbacks.pause.marker={marker}"]
    other = subprocess.Popen(worker_command(0, overrides), cwd=REPO_ROOT, env=environment(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kill_when_marked(worker_command(1, [*overrides, *pause]), marker)  # worker 1 dies inside its first trial
    study = load_study(tmp_path / "sweeps" / "tiny", None, None)
    killed = [t for t in study.get_trials() if t.user_attrs["worker"] == "1"]
    assert killed and killed[0].state == optuna.trial.TrialState.RUNNING
    restarted = subprocess.run(worker_command(1, overrides), cwd=REPO_ROOT, env=environment(),
                               capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert other.wait(timeout=600) == 0, other.stderr.read()[-3000:]

    trials = load_study(tmp_path / "sweeps" / "tiny", None, None).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    taken_back = trials[killed[0].number]
    assert taken_back.user_attrs["worker"] == "1" and taken_back.params == killed[0].params
    assert {t.user_attrs["worker"] for t in trials} == {"0", "1"}
    for trial in trials:
        assert (tmp_path / "sweeps" / "tiny" / f"trial_{trial.number:04d}" / "checkpoints" / "last.ckpt").is_file()


def search_config(tmp_path: Path, *extra: str):
    return compose_config("search", [*tiny(tmp_path, 2), *extra], tmp_path / "worker")


def test_a_failing_trial_is_recorded_and_the_worker_goes_on(tmp_path):
    cfg = search_config(tmp_path, "hparams_search.worker=0")
    with open_dict(cfg):
        cfg.hparams_search.params = {"method.module.optimizer.lr": {"type": "categorical", "choices": [-1.0]}}
    study = run_worker(cfg, tiny(tmp_path, 2))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert "learning rate" in study.trials[0].user_attrs["error"].lower()


def test_rerunning_a_finished_study_runs_no_more_trials(tmp_path):
    cfg = search_config(tmp_path, "hparams_search.worker=0")
    assert len(run_worker(cfg, tiny(tmp_path, 2)).trials) == 2
    assert len(run_worker(cfg, tiny(tmp_path, 2)).trials) == 2


@pytest.mark.parametrize("objective,space", [("oracle/aji", "supervised"), ("test/aji", "supervised"),
                                             ("val/aji", "s2l"), ("oracle/aji", "s2l")])
def test_objectives_on_test_data_or_ground_truth_are_refused(tmp_path, objective, space):
    cfg = compose_config("search", [f"method={space}", f"hparams_search={space}", f"optimized_metric={objective}",
                                    f"paths.log_dir={tmp_path}"], tmp_path / "worker")
    with pytest.raises(ConfigError, match="sweep rule forbids"):
        run_worker(cfg, [])


def test_a_worker_of_one_process_refuses_several_devices(tmp_path):
    cfg = search_config(tmp_path, "trainer.devices=2", "trainer.strategy=ddp")
    with pytest.raises(ConfigError, match="one process per device"):
        run_worker(cfg, [])


def test_the_best_trial_exports_as_an_experiment_that_composes(tmp_path):
    cfg = search_config(tmp_path, "hparams_search.worker=0")
    study = run_worker(cfg, tiny(tmp_path, 2))
    folder = tmp_path / "configs" / "experiment"
    folder.mkdir(parents=True)
    (folder / "found.yaml").write_text(exported_experiment(study))
    found = compose_config("train", ["experiment=found", f"hydra.searchpath=[file://{tmp_path / 'configs'}]"],
                           tmp_path / "run")
    for key, value in study.best_params.items():
        assert found[key.split(".")[0]] is not None
        node = found
        for part in key.split("."):
            node = node[part]
        assert node == value
    assert found.get("hparams_search") is None and found.test is True
    assert found.trainer.max_steps == 3 and found.data.name == "sample"


def test_an_s2l_trial_is_scored_by_the_validation_scribble_loss(tmp_path):
    swap = {"experiment=supervised_unet_sample": "experiment=s2l_unet_sample", "hparams_search=supervised":
            "hparams_search=s2l", "data.val_holdout=1": "data.val_holdout=2"}
    overrides = [swap.get(o, o) for o in tiny(tmp_path, 1)]
    cfg = compose_config("search", [*overrides, "hparams_search.worker=0"], tmp_path / "worker")
    assert cfg.optimized_metric == "val/scribble_loss" and cfg.hparams_search.direction == "minimize"
    study = run_worker(cfg, overrides)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("error")
    assert trial.value > 0.0 and set(trial.params) == set(cfg.hparams_search.params)


def test_a_trial_that_keeps_its_best_checkpoint_is_scored_by_that_checkpoint(tmp_path):
    overrides = [*tiny(tmp_path, 1), "trainer.max_steps=6", "trainer.val_check_interval=2"]
    cfg = compose_config("search", [*overrides, "hparams_search.worker=0"], tmp_path / "worker")
    (trial,) = run_worker(cfg, overrides).trials
    checkpoints = tmp_path / "sweeps" / "tiny" / "trial_0000" / "checkpoints"
    (best,) = [p for p in checkpoints.glob("step*.ckpt")]
    state = torch.load(best, weights_only=False)["callbacks"]
    (kept,) = [v for k, v in state.items() if k.startswith("ModelCheckpoint")]
    assert kept["monitor"] == "val/aji" and trial.value == pytest.approx(float(kept["best_model_score"]), abs=1e-12)
    assert kept["best_model_path"].endswith(best.name)
