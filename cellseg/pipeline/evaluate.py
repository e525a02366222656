"""Predict a split with a trained module and score it as `eval.py` does: shared by train.py and the pipelines."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cellseg.evaluation import evaluate_predictions, format_table
from cellseg.inference.prediction_writer import InstanceMapWriter

log = logging.getLogger(__name__)


def predict_and_evaluate(cfg, trainer, module, datamodule, ckpt_path: str | None, split_role: str = "test") -> dict:
    """Write predicted instance maps of a split (into an emptied folder), then score them as eval.py does."""
    output_dir = Path(cfg.paths.output_dir)
    pred_dir = output_dir / "predictions" / split_role
    if trainer.is_global_zero and pred_dir.exists():
        shutil.rmtree(pred_dir)  # an earlier run's maps must not mix with these
    trainer.strategy.barrier()
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
