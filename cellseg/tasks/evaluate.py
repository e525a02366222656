"""`python eval.py data=monuseg split=test pred_dir=DIR`: score predicted instance maps against a split's labels."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cellseg.data.layout import SplitLayout
from cellseg.evaluation import evaluate_predictions, format_table
from cellseg.pipeline.trainer import instantiate_list
from cellseg.tasks.common import run_task
from cellseg.utils.project import CONFIG_DIR, set_project_root_env

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    pred_dir = Path(cfg.pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"pred_dir={pred_dir} is not a folder of <id>.png / <id>.tif instance maps")
    datamodule = hydra.utils.instantiate(cfg.data)
    split = cfg.split
    role = next((r for r, s in datamodule.splits.items() if s == split), None)
    layout = datamodule.layout(role) if role else SplitLayout.of(datamodule.root, datamodule.dataset, split)
    ids = datamodule.ids(role) if role else None
    result = evaluate_predictions(layout.labels_dir, pred_dir, Path(cfg.paths.output_dir), ids=ids,
                                  allow_class_maps=bool(cfg.get("allow_class_maps", False)))
    print(format_table(result))
    metrics = {f"{split}/{k}": v for k, v in result.per_image_mean.items()}
    metrics.update({f"{split}/{k}_pooled": v for k, v in result.pooled.items()})
    for logger in instantiate_list(cfg.get("logger")):
        logger.log_metrics(metrics)
        logger.finalize("success")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_task(cfg, evaluate)


set_project_root_env()
