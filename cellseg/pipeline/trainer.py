"""The one place that builds Lightning trainers, their loggers and callbacks, for tasks and pipeline stages.

Every trainer gets what makes its runs trustworthy whatever the user's callback config: checkpoints written
atomically, the random states saved with each checkpoint (`RandomStateCheckpoint`), and, with W&B, the run id
stored in checkpoints so that a resumed run continues its W&B run. A trainer of a model that inference can load
also writes the inference recipe into its checkpoints (`InferenceRecipe`), so a `.ckpt` file is self-contained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from cellseg.callbacks import RandomStateCheckpoint, WandbRunId
from cellseg.callbacks.inference_recipe import InferenceRecipe
from cellseg.callbacks.wandb_run_id import stored_run_id
from cellseg.pipeline.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)
CHECKPOINT_CALLBACKS = ("last_checkpoint", "model_checkpoint")  # their `dirpath` follows `checkpoint_dir`


def instantiate_list(node: DictConfig | None, skip: Iterable[str] = (), **overrides_by_name: dict) -> list:
    """A dict of `_target_` nodes (callbacks, loggers) -> a list of objects; null entries and the names in
    `skip` are left out; `overrides_by_name[name]` are extra keyword arguments for the entry `name`."""
    if not node:
        return []
    skipped = set(skip)
    return [hydra.utils.instantiate(value, **overrides_by_name.get(name, {}))
            for name, value in node.items() if name not in skipped and value and "_target_" in value]


def is_wandb_node(node) -> bool:
    return bool(node) and str(node.get("_target_", "")).endswith("WandbLogger")


def build_loggers(logger_cfg: DictConfig | None, resume_from: str | None = None,
                  save_dir: Path | None = None) -> list:
    """The configured loggers (writing under `save_dir` when given); a WandbLogger resumes the run id stored
    in the checkpoint `resume_from` when there is one."""
    if not logger_cfg:
        return []
    run_id = stored_run_id(resume_from) if any(is_wandb_node(n) for n in logger_cfg.values()) else None
    loggers = []
    for node in logger_cfg.values():
        if not node or "_target_" not in node:
            continue
        kwargs = {"save_dir": str(save_dir)} if save_dir is not None and "save_dir" in node else {}
        if is_wandb_node(node) and run_id:
            log.info("resuming W&B run %s stored in %s", run_id, resume_from)
            kwargs.update(id=run_id, resume="allow")
        loggers.append(hydra.utils.instantiate(node, **kwargs))
    return loggers


def build_callbacks(callbacks_cfg: DictConfig | None, loggers: list, checkpoint_dir: Path | None = None,
                    extra: Iterable[pl.Callback] = (), skip: Iterable[str] = (),
                    recipe: dict | None = None) -> list[pl.Callback]:
    """`extra` (the method's own callbacks, e.g. EMA weights: first, so a step's state is complete before any
    checkpoint of it), the configured callbacks (minus `skip`; their checkpoints written into `checkpoint_dir`
    when given) and the framework's own callbacks; `recipe` (`build_recipe`) goes into every checkpoint."""
    overrides = {name: {"dirpath": str(checkpoint_dir)} for name in CHECKPOINT_CALLBACKS} if checkpoint_dir else {}
    callbacks = [*extra, *instantiate_list(callbacks_cfg, skip=skip, **overrides)]
    if not loggers:  # nothing to report learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    callbacks.append(RandomStateCheckpoint())
    if recipe is not None:
        callbacks.append(InferenceRecipe(recipe))
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        callbacks.append(WandbRunId())
    return callbacks


def resolved_config(cfg: DictConfig) -> dict:
    """The run's whole configuration, interpolations resolved, without Hydra's own node."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=True)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list, **overrides) -> pl.Trainer:
    """`cfg.trainer` with these callbacks and loggers, atomic checkpoint writes, and keyword overrides. Every
    logger records the run's resolved config (data, model, method, seed, budget ...), not only the module's
    hyper-parameters that Lightning logs itself."""
    if loggers:
        config = resolved_config(cfg)
        for logger in loggers:
            logger.log_hyperparams(config)
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                   plugins=[AtomicCheckpointIO()], **overrides)


def stage_trainer(cfg: DictConfig, root: Path, max_steps: int, extra: Iterable[pl.Callback] = (),
                  recipe: dict | None = None, **overrides) -> pl.Trainer:
    """The trainer of a pipeline's training stage: the run's loggers and callbacks writing under the stage
    folder `root` (last.ckpt in `root/checkpoints/` every `callbacks.last_checkpoint.every_n_train_steps` steps),
    the method's own callbacks `extra` first, no validation and no checkpoint selection unless `overrides` say
    otherwise (a pipeline never selects a checkpoint with ground truth); `recipe` as in `build_callbacks`."""
    loggers = build_loggers(cfg.get("logger"), save_dir=root)
    callbacks = build_callbacks(cfg.get("callbacks"), loggers, checkpoint_dir=root / "checkpoints", extra=extra,
                                skip=("ema", "model_checkpoint"), recipe=recipe)
    settings = {"max_steps": max_steps, "max_epochs": None, "default_root_dir": str(root), "limit_val_batches": 0,
                "num_sanity_val_steps": 0, "enable_checkpointing": False, **overrides}
    return build_trainer(cfg, callbacks, loggers, **settings)
