"""`python train.py method=X data=Y`: fit a method, then evaluate the selected checkpoint on the test split."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from cellseg.evaluation import evaluate_predictions, format_table
from cellseg.inference.prediction_writer import InstanceMapWriter
from cellseg.tasks.common import (
    ConfigError,
    check_monitors,
    check_supervision,
    instantiate_list,
    metric_for_sweeper,
    run_task,
)
from cellseg.tasks.wandb_resume import build_loggers, with_run_id_callback
from cellseg.utils.project import CONFIG_DIR, set_project_root_env

log = logging.getLogger(__name__)


def build(cfg: DictConfig):
    """Data module (with its weak labels), network, LightningModule, trainer: all from `_target_` nodes."""
    weak_labels = hydra.utils.instantiate(cfg.supervision.generator)
    datamodule = hydra.utils.instantiate(cfg.data, weak_labels=weak_labels)
    net = hydra.utils.instantiate(cfg.model)
    module = hydra.utils.instantiate(cfg.method.module, net=net)
    datamodule.configure_targets(module.train_target, module.ignore_index, module.uses_val_targets)
    loggers = build_loggers(cfg.get("logger"), resolve_resume(cfg) if cfg.get("train") else None)
    callbacks = with_run_id_callback(instantiate_list(cfg.get("callbacks")), loggers)
    if not loggers:  # nothing to report learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def resolve_resume(cfg: DictConfig) -> str | None:
    """`ckpt_path=last` resumes from this run's last.ckpt when there is one (requeued jobs); a path must exist."""
    path = cfg.get("ckpt_path")
    if path is None:
        return None
    if path == "last":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist")
    return str(path)


def select_checkpoint(cfg: DictConfig, trainer: pl.Trainer) -> str | None:
    """The checkpoint the test split sees: `best` (on the method's allowed monitor) or `last`; never test data."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return resolve_resume(cfg)
    if cfg.method.selection == "best" and callback.best_model_path:
        return callback.best_model_path
    return callback.last_model_path or resolve_resume(cfg)


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


def predict_and_evaluate(cfg, trainer, module, datamodule, ckpt_path: str | None, split_role: str = "test") -> dict:
    """Write predicted instance maps of a split, then score them with the same code as eval.py."""
    output_dir = Path(cfg.paths.output_dir)
    pred_dir = output_dir / "predictions" / split_role
    trainer.callbacks.append(InstanceMapWriter(pred_dir))
    loader = datamodule.predict_dataloader_for(split_role, with_labels=False)
    trainer.predict(module, dataloaders=loader, ckpt_path=ckpt_path, return_predictions=False)
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return {}
    layout = datamodule.layout(split_role)
    result = evaluate_predictions(layout.labels_dir, pred_dir, output_dir, ids=datamodule.ids(split_role))
    log.info("%s metrics (checkpoint %s):\n%s", split_role, ckpt_path, format_table(result))
    metrics = {f"{split_role}/{k}": v for k, v in result.per_image_mean.items()}
    for logger in trainer.loggers:
        logger.log_metrics(metrics)
    return metrics


def fit_and_test(cfg: DictConfig) -> dict:
    """The single-stage training task used by the supervised baseline and by S2L."""
    pl.seed_everything(cfg.seed, workers=True)
    configure_selection(cfg, has_val=cfg.data.get("val_split") is not None or bool(cfg.data.get("val_holdout")))
    check_monitors(cfg)
    datamodule, module, trainer = build(cfg)
    metrics: dict = {}
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(cfg))
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if cfg.get("test"):
        metrics.update(predict_and_evaluate(cfg, trainer, module, datamodule, select_checkpoint(cfg, trainer)))
    return metrics


def train(cfg: DictConfig) -> dict:
    """Run the method's runner (`method.runner`: fit_and_test, or a multi-stage pipeline)."""
    runner = hydra.utils.instantiate(cfg.method.runner)
    return runner(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    check_supervision(cfg)
    metrics = run_task(cfg, train)
    return metric_for_sweeper(cfg, metrics)


set_project_root_env()
