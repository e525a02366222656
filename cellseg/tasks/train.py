"""`python train.py method=X data=Y`: fit a method, then evaluate the selected checkpoint on the test split."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cellseg.callbacks import LastCheckpoint
from cellseg.callbacks.inference_recipe import build_recipe
from cellseg.callbacks.last_checkpoint import LAST_NAME
from cellseg.data.weak.amount import annotation_used
from cellseg.pipeline.checks import ConfigError, check_monitors, check_supervision
from cellseg.pipeline.evaluate import predict_and_evaluate
from cellseg.pipeline.trainer import build_callbacks, build_loggers, build_trainer
from cellseg.tasks.common import metric_for_sweeper, run_task
from cellseg.utils.checkpoints import read_checkpoint
from cellseg.utils.project import CONFIG_DIR, RUN_INFO, read_run_info, set_project_root_env, update_run_record

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
# What `overwrite=true` keeps of an earlier run in the same folder: Hydra's record of this job and its log file.
KEPT_ON_OVERWRITE = (".hydra",)


def build(cfg: DictConfig):
    """Data module (with its weak labels), network, LightningModule, trainer: all from `_target_` nodes."""
    weak_labels = hydra.utils.instantiate(cfg.supervision.generator)
    datamodule = hydra.utils.instantiate(cfg.data, weak_labels=weak_labels)
    net = hydra.utils.instantiate(cfg.model)
    module = hydra.utils.instantiate(cfg.method.module, net=net)
    datamodule.configure_targets(module.train_target, module.ignore_index, module.uses_val_targets)
    loggers = build_loggers(cfg.get("logger"), resolve_resume(cfg) if cfg.get("train") else None)
    trainer = build_trainer(cfg, build_callbacks(cfg.get("callbacks"), loggers, recipe=build_recipe(cfg)), loggers)
    return datamodule, module, trainer


def resolve_resume(cfg: DictConfig) -> str | None:
    """`ckpt_path=last` resumes from this run's last.ckpt when there is one (requeued jobs); a path must exist
    (`check_run_request` also reads it, so a truncated file is refused before any work)."""
    path = cfg.get("ckpt_path")
    if path is None:
        return None
    if path == "last":
        path = Path(cfg.paths.output_dir) / CHECKPOINTS_DIR / LAST_NAME
        if not path.is_file():
            return None
    elif not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist")
    return str(path)


def check_run_request(cfg: DictConfig) -> None:
    """Refuse, before anything is written, a run whose result would not be what it claims to be."""
    train, test, ckpt = bool(cfg.get("train")), bool(cfg.get("test")), cfg.get("ckpt_path")
    if not train and not test:
        raise ConfigError("train=false test=false: nothing to do")
    if not train and ckpt is None:
        raise ConfigError("train=false needs ckpt_path=<checkpoint> (or ckpt_path=last): without training or a "
                          "checkpoint the test split would score a randomly initialised network")
    resumed = resolve_resume(cfg)
    if resumed is not None:
        read_checkpoint(resumed, mmap=True)  # a truncated or foreign checkpoint fails here, naming the file
    if not train and ckpt == "last" and resumed is None:
        raise ConfigError(f"train=false ckpt_path=last but {Path(cfg.paths.output_dir) / CHECKPOINTS_DIR / LAST_NAME} "
                          "does not exist")
    if train:
        for key in ("max_steps", "max_epochs"):
            if cfg.trainer.get(key) == 0:
                raise ConfigError(f"trainer.{key}=0 trains nothing: the test split would score an untrained "
                                  "network (use train=false ckpt_path=<checkpoint> to evaluate a checkpoint)")


def prepare_run_folder(cfg: DictConfig) -> None:
    """A fresh fit (no ckpt_path) never mixes with an earlier run's checkpoints in the same folder: refused, or
    with `overwrite=true` the earlier run's outputs are deleted first."""
    output_dir = Path(cfg.paths.output_dir)
    if not cfg.get("train") or cfg.get("ckpt_path") is not None:
        return
    earlier = sorted((output_dir / CHECKPOINTS_DIR).glob("*.ckpt"))
    if not earlier:
        return
    if not cfg.get("overwrite"):
        raise ConfigError(
            f"{output_dir} already holds checkpoints of an earlier run ({earlier[0].name}, ...): resume it with "
            "ckpt_path=last, start over with overwrite=true (deletes its outputs), or write elsewhere "
            "(another seed, experiment_name or hydra.run.dir)")
    log.warning("overwrite=true: deleting the earlier run's outputs in %s", output_dir)
    for entry in output_dir.iterdir():
        if entry.name in KEPT_ON_OVERWRITE or entry.suffix == ".log":
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def select_checkpoint(cfg: DictConfig, trainer: pl.Trainer) -> str | None:
    """The checkpoint the test split sees: `best` (on the method's allowed monitor) or `last`; never test data."""
    if cfg.method.selection == "best" and trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path:
        return trainer.checkpoint_callback.best_model_path
    last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    if last is not None and last.path.is_file():
        return str(last.path)
    return resolve_resume(cfg)


def selected_checkpoint_score(cfg: DictConfig, trainer: pl.Trainer) -> dict:
    """{monitor: its value at the best checkpoint} when the run keeps its best checkpoint: the figure of the model
    the run hands on (a sweep's objective), not of the last validation."""
    callback = trainer.checkpoint_callback
    if cfg.method.selection != "best" or callback is None or callback.best_model_score is None:
        return {}
    return {callback.monitor: float(callback.best_model_score)}


def configure_selection(cfg: DictConfig, has_val: bool) -> None:
    """Point the checkpoint callback at the method's monitor when it selects the best checkpoint."""
    node = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if node is None:
        return
    if cfg.method.selection == "best":
        if not has_val:
            log.warning("method.selection=best but the data has no validation split: using the last checkpoint")
            cfg.method.selection = "last"
        else:
            node.monitor = cfg.method.monitor
            node.mode = cfg.method.get("monitor_mode", node.get("mode", "max"))
    elif cfg.method.selection != "last":
        raise ConfigError(f"method.selection={cfg.method.selection}; expected best or last")


def fit_and_test(cfg: DictConfig) -> dict:
    """The single-stage training task used by the supervised baseline and by S2L."""
    check_run_request(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    configure_selection(cfg, has_val=cfg.data.get("val_split") is not None or bool(cfg.data.get("val_holdout")))
    check_monitors(cfg)
    datamodule, module, trainer = build(cfg)
    metrics: dict = {}
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(cfg))
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(selected_checkpoint_score(cfg, trainer))
    if cfg.get("test"):
        metrics.update(predict_and_evaluate(cfg, trainer, module, datamodule, select_checkpoint(cfg, trainer)))
    return metrics


def train(cfg: DictConfig) -> dict:
    """Run the method's runner (`method.runner`: fit_and_test, or a multi-stage pipeline)."""
    runner = hydra.utils.instantiate(cfg.method.runner)
    metrics = runner(cfg)
    record_annotation_used(cfg)
    return metrics


def record_annotation_used(cfg: DictConfig) -> None:
    """run_info's record gains what the training images carried under the run's supervision (instances, scribble
    pixels, labelled tiles), counted from the cached weak labels."""
    output_dir = Path(cfg.paths.output_dir)
    if not cfg.get("train") or pl.utilities.rank_zero_only.rank != 0 or not (output_dir / RUN_INFO).is_file():
        return
    if "annotation_used" in read_run_info(output_dir).get("record", {}):  # the runner counted its own labels
        return
    datamodule = hydra.utils.instantiate(cfg.data, weak_labels=None)
    used = annotation_used(hydra.utils.instantiate(cfg.supervision.generator), datamodule.layout("train"),
                           datamodule.ids("train"))
    update_run_record(output_dir, annotation_used=used)


def resumes_automatically(cfg: DictConfig) -> bool:
    """A sweep job or a requeued SLURM job whose folder already holds last.ckpt continues from it: a multirun
    job's folder is its own (the sweep id and job number name it), so a checkpoint there is this job's own from
    before a preemption, a time-out or a resubmission of the same sweep."""
    if cfg.get("ckpt_path") is not None or not cfg.get("train"):
        return False
    if not (Path(cfg.paths.output_dir) / CHECKPOINTS_DIR / LAST_NAME).is_file():
        return False
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return multirun or int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def prepare_training_run(cfg: DictConfig) -> None:
    """Every check of a training request, and the run folder made ready, before the run writes anything."""
    if resumes_automatically(cfg):
        log.info("%s holds last.ckpt of this sweep job from an earlier start: resuming (ckpt_path=last)",
                 cfg.paths.output_dir)
        cfg.ckpt_path = "last"
    check_supervision(cfg)
    check_run_request(cfg)
    prepare_run_folder(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    prepare_training_run(cfg)
    metrics = run_task(cfg, train)
    return metric_for_sweeper(cfg, metrics)


set_project_root_env()


if __name__ == "__main__":
    main()
