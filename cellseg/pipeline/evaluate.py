"""Predict a split with a trained module and score it as `eval.py` does: shared by train.py and the pipelines."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from cellseg.data.layout import SplitLayout
from cellseg.evaluation import EvalResult, evaluate_predictions, format_table
from cellseg.inference.prediction_writer import InstanceMapWriter
from cellseg.utils.io import read_image, read_label
from cellseg.utils.overlay import as_rgb_uint8, overlay_instances

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
    log_evaluation(trainer.loggers, result, layout, pred_dir, split_role, overlays=getattr(module, "log_images", 0))
    return {f"{split_role}/{k}": v for k, v in result.per_image_mean.items()}


def log_evaluation(loggers, result: EvalResult, layout: SplitLayout, pred_dir: Path, split_role: str,
                   overlays: int = 0) -> None:
    """Every logger gets the split's per-image means (W&B keeps the last values as the run's summary); loggers
    that hold tables and images (W&B) also get the per-image table and overlays of the first `overlays` images
    (predicted outlines red, ground truth green), so a run's page shows what the figures came from."""
    metrics = {f"{split_role}/{k}": v for k, v in result.per_image_mean.items()}
    ids = [str(image_id) for image_id in result.per_image.index[:max(0, int(overlays))]]
    for logger in loggers:
        logger.log_metrics(metrics)
        if hasattr(logger, "log_table"):
            logger.log_table(key=f"{split_role}/per_image", dataframe=result.per_image.rename_axis("image_id").reset_index())
        if hasattr(logger, "log_image") and ids:
            logger.log_image(key=f"{split_role}/overlay", images=[prediction_overlay(layout, pred_dir, i) for i in ids],
                             caption=ids)


def prediction_overlay(layout: SplitLayout, pred_dir: Path, image_id: str) -> np.ndarray:
    """The image with the saved prediction's outlines (red) over the ground truth's (green)."""
    image = as_rgb_uint8(read_image(layout.image_path(image_id)))
    return overlay_instances(image, read_label(pred_dir / f"{image_id}.png"), read_label(layout.label_path(image_id)))
