"""A search worker: draws trials from a shared Optuna study and runs each through the train task.

    python -m cellseg.sweeps.optuna_search hparams_search=supervised experiment=supervised_unet_monuseg
    python -m cellseg.sweeps.optuna_search -m hydra/launcher=submitit_slurm hparams_search.worker=0,1,2,3 ...

The search space, objective, sampler, pruner and budget come from the `hparams_search` config group. Any number
of workers (processes, SLURM jobs) share one study (`cellseg.sweeps.study`); each trial is the train config with
the sampled values as ordinary overrides, trained in `<log_dir>/sweeps/<study>/trial_<number>`, with
`ckpt_path=last` when that folder already holds a checkpoint (a trial taken back after its worker was killed
resumes instead of starting over). A worker stops when the study's budget `n_trials` is handed out.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from cellseg.callbacks.last_checkpoint import LAST_NAME
from cellseg.pipeline.checks import check_objective, check_supervision
from cellseg.pipeline.distributed import rank
from cellseg.sweeps import ranks
from cellseg.sweeps.pruning import pruning_trial
from cellseg.sweeps.search_space import as_override, space_of
from cellseg.sweeps.study import (
    TrialRequest,
    counts,
    next_trial,
    open_study,
    record_failure,
    record_search,
    trial_id,
)
from cellseg.tasks.common import metric_for_sweeper, run_task
from cellseg.tasks.compose import compose_config
from cellseg.tasks.train import CHECKPOINTS_DIR, prepare_training_run, train
from cellseg.utils.project import CONFIG_DIR, set_project_root_env

log = logging.getLogger(__name__)

# Environment variables that name a cluster job stably across its requeues (the default worker id).
WORKER_ID_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


def study_folder(cfg: DictConfig) -> Path:
    return Path(cfg.paths.log_dir) / "sweeps" / cfg.hparams_search.study_name


def check_search(cfg: DictConfig) -> DictConfig:
    """A search space, an objective that obeys the rules and a method/supervision pair that runs."""
    search = cfg.get("hparams_search")
    if not search or "params" not in search:
        raise ValueError("choose a search space: hparams_search=<name> (configs/hparams_search/)")
    space_of(search.params)
    check_objective(cfg)
    check_supervision(cfg)
    return search


def worker_name(cfg: DictConfig) -> str:
    """`hparams_search.worker`, else the multirun job number, else the SLURM array task, else host-pid."""
    if cfg.hparams_search.get("worker") is not None:
        return str(cfg.hparams_search.worker)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(HydraConfig.get().job.num)
    if all(name in os.environ for name in WORKER_ID_ENV):
        return "_".join(os.environ[name] for name in WORKER_ID_ENV)
    return f"{socket.gethostname()}-{os.getpid()}"


def trial_config(base_overrides: list[str], request: TrialRequest, folder: Path, monitor: str | None) -> DictConfig:
    """The train config of one trial; with a pruner, the pruning callback is added to its callbacks."""
    trial_dir = folder / f"trial_{request.number:04d}"
    overrides = [*base_overrides, *(as_override(name, value) for name, value in request.params.items())]
    if (trial_dir / CHECKPOINTS_DIR / LAST_NAME).is_file():
        overrides.append("ckpt_path=last")
    cfg = compose_config("train", overrides, trial_dir)
    if monitor is not None:
        with open_dict(cfg):
            cfg.callbacks = cfg.get("callbacks") or {}
            cfg.callbacks.trial_pruning = {"_target_": "cellseg.sweeps.pruning.TrialPruning", "monitor": monitor}
    return cfg


def run_trial(cfg: DictConfig, trial: optuna.Trial | None) -> tuple[float | None, str | None, int | None]:
    """(objective, error, step it was pruned at) of one trial on this rank."""
    try:
        with pruning_trial(trial) as state:
            prepare_training_run(cfg)
            value = metric_for_sweeper(cfg, run_task(cfg, train))
        if value is None:
            raise RuntimeError(f"the run produced no {cfg.optimized_metric}")
        return value, None, state["pruned_at"]
    except Exception as error:  # recorded as a failed trial; the worker goes on
        log.exception("trial failed")
        return None, f"{type(error).__name__}: {error}", None


def run_worker(cfg: DictConfig, base_overrides: list[str]) -> optuna.Study | None:
    """Trials until the budget is handed out; returns the study on rank 0 (None on the other ranks)."""
    search = check_search(cfg)
    ranks.join_ranks(cfg)
    leader = rank() == 0
    folder, worker = study_folder(cfg), worker_name(cfg)
    pruner = hydra.utils.instantiate(search.pruner) if search.get("pruner") else None
    study = open_study(search, folder, pruner) if leader else None
    if leader:
        record_search(study, base_overrides, cfg.optimized_metric)
        log.info("worker %s joins study %s in %s: %s", worker, search.study_name, folder, counts(study))
    while True:
        request = ranks.share_from_rank_zero(next_trial(study, search, folder, worker) if leader else None)
        if request is None:
            break
        log.info("rank %d: trial %d%s with %s", rank(), request.number, " (resumed)" * request.resumed,
                 request.params)
        cfg_trial = trial_config(base_overrides, request, folder, cfg.optimized_metric if pruner else None)
        trial = optuna.trial.Trial(study, trial_id(study, request.number)) if leader else None
        value, error, pruned_at = run_trial(cfg_trial, trial)
        value, error = ranks.reduce_objective(value, error)
        log.info("rank %d: trial %d objective %s%s", rank(), request.number, value,
                 f" (error: {error})" if error else "")
        if not leader:
            continue
        if error is not None:
            record_failure(study, request.number, error)
        elif pruned_at is not None:
            study.tell(request.number, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(request.number, value)
    if leader:
        log.info("worker %s done: study %s has %s", worker, search.study_name, counts(study))
    return study


def task_overrides() -> list[str]:
    """The worker's command-line overrides, which every trial repeats (the worker id excepted)."""
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("hparams_search.worker=")]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def main(cfg: DictConfig) -> None:
    study = run_worker(cfg, task_overrides())
    if study is not None:
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if complete:
            log.info("best so far: trial %d, %s = %.4f with\n%s", study.best_trial.number, cfg.optimized_metric,
                     study.best_value, OmegaConf.to_yaml(OmegaConf.create(study.best_params)))


set_project_root_env()

if __name__ == "__main__":
    main()
