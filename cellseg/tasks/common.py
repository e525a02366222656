"""Pieces every task shares: config checks and the run wrapper (status, stale results, W&B clean-up)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from cellseg.evaluation import METRICS_JSON, PER_IMAGE_CSV
from cellseg.pipeline.checks import ConfigError, check_objective
from cellseg.utils.project import save_run_info, set_run_status

log = logging.getLogger(__name__)

# What a task run leaves as its result; an earlier run's copies are removed before a new run starts.
RESULT_FILES = (METRICS_JSON, PER_IMAGE_CSV)


def apply_extras(cfg: DictConfig) -> None:
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("enforce_tags") and not cfg.get("tags"):
        raise ConfigError("extras.enforce_tags=true but no tags are set: add tags=[...]")
    if extras.get("print_config"):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))


def finish_wandb() -> None:
    """Close any W&B run; otherwise multirun jobs are merged into one run."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def run_task(cfg: DictConfig, task: Callable[[DictConfig], dict]) -> dict:
    """Extras, run bookkeeping, the task itself, and W&B clean-up whatever happens.

    Result files an earlier task left in the run folder are removed first, and run_info.json says whether this
    one `completed` or `failed`: a folder never shows an old success beside a new failure.
    """
    apply_extras(cfg)
    output_dir = Path(cfg.paths.output_dir)
    rank_zero = pl.utilities.rank_zero_only.rank == 0
    if rank_zero:
        remove_stale_results(output_dir)
        save_run_info(cfg, output_dir)
    try:
        metrics = task(cfg)
    except BaseException as error:
        if rank_zero:
            set_run_status(output_dir, "failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        finish_wandb()
    if rank_zero:
        set_run_status(output_dir, "completed")
    return metrics


def remove_stale_results(output_dir: Path) -> None:
    for name in RESULT_FILES:
        (output_dir / name).unlink(missing_ok=True)


def metric_for_sweeper(cfg: DictConfig, metrics: dict) -> float | None:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    check_objective(cfg)
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name} is not among the run's metrics {sorted(metrics)}")
    return float(metrics[name])
