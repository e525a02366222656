"""Optuna search over any config keys, resumable from its SQLite study.

    python -m cellseg.sweeps.optuna_search hparams_search=supervised_lr experiment=supervised_unet_monuseg

The search space, objective and storage come from the `hparams_search` config group; every trial composes the
train config with the sampled values as ordinary overrides and runs the train task in its own folder. Re-running
the same command continues the study until `n_trials` trials are finished (failed trials are recorded, not retried).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from cellseg.pipeline.checks import check_supervision
from cellseg.tasks.common import metric_for_sweeper, run_task
from cellseg.tasks.compose import compose_config
from cellseg.tasks.train import prepare_training_run, train

log = logging.getLogger(__name__)


def suggest(trial: optuna.Trial, name: str, spec: DictConfig):
    kind = spec.get("type")
    if kind == "float":
        return trial.suggest_float(name, spec.low, spec.high, log=bool(spec.get("log", False)))
    if kind == "int":
        return trial.suggest_int(name, spec.low, spec.high, log=bool(spec.get("log", False)))
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec.choices))
    raise ValueError(f"hparams_search.params.{name}.type={kind!r}; expected float, int or categorical")


def study_root(base: DictConfig) -> Path:
    return Path(base.paths.log_dir) / "sweeps" / base.hparams_search.study_name


def run_search(overrides: list[str]) -> optuna.Study:
    base = compose_config("train", overrides, Path("/nonexistent"))
    search = base.get("hparams_search")
    if not search or "params" not in search:
        raise ValueError("choose a search space: hparams_search=<name> (configs/hparams_search/)")
    if not base.get("optimized_metric"):
        raise ValueError("hparams_search needs optimized_metric (a validation metric, e.g. val/aji)")
    check_supervision(base)
    root = study_root(base)
    root.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=search.study_name,
        storage=search.get("storage") or f"sqlite:///{root / 'study.db'}",
        direction=search.direction,
        sampler=optuna.samplers.TPESampler(seed=search.get("seed")),
        load_if_exists=True,
    )

    def objective(trial: optuna.Trial) -> float:
        sampled = {name: suggest(trial, name, spec) for name, spec in search.params.items()}
        trial_overrides = [*overrides, *(f"{k}={v}" for k, v in sampled.items())]
        cfg = compose_config("train", trial_overrides, root / f"trial_{trial.number:04d}")
        log.info("trial %d: %s", trial.number, sampled)
        prepare_training_run(cfg)
        value = metric_for_sweeper(cfg, run_task(cfg, train))
        if value is None:
            raise RuntimeError(f"trial {trial.number} produced no {cfg.optimized_metric}")
        return value

    finished = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for t in study.trials)
    remaining = max(0, int(search.n_trials) - finished)
    study.optimize(objective, n_trials=remaining, catch=(Exception,))
    return study


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    study = run_search(list(sys.argv[1:] if argv is None else argv))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        print(f"best {study.best_value:.4f} with {OmegaConf.to_yaml(OmegaConf.create(study.best_params))}")
    print(f"{len(complete)} complete / {len(study.trials)} trials in study {study.study_name}")


if __name__ == "__main__":
    main()
