"""What the loggers receive from a run: the resolved config from every trainer, and from a test evaluation the
per-image means (every logger), the per-image table and overlays (loggers that hold them: W&B, run offline here)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import wandb
import yaml
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from cellseg.data.layout import SplitLayout
from cellseg.evaluation import evaluate_predictions
from cellseg.pipeline.evaluate import log_evaluation, prediction_overlay
from cellseg.pipeline.trainer import build_trainer
from cellseg.utils.io import write_image, write_label
from cellseg.utils.overlay import GT_COLOUR, PRED_COLOUR

# The trainer node and an interpolation the loggers must see resolved; Hydra's own node stays out.
RUN_CONFIG = {"trainer": {"_target_": "pytorch_lightning.Trainer", "max_steps": 1, "accelerator": "cpu",
                          "enable_progress_bar": False, "enable_model_summary": False},
              "data": {"crop": 64, "tile": "${data.crop}"}, "supervision": {"ratio": 0.3}, "seed": 3,
              "hydra": {"cwd": "${hydra:runtime.cwd}"}}


@pytest.fixture()
def evaluated(tmp_path):
    """Two 32x32 test images: `a` with both nuclei found, `b` with one of two; predictions saved as a run does."""
    layout = SplitLayout.of(tmp_path / "data", "Synth", "test")
    pred_dir = tmp_path / "predictions"
    for image_id, found in (("a", 2), ("b", 1)):
        gt = np.zeros((32, 32), dtype=np.int32)
        gt[4:12, 4:12], gt[18:28, 18:28] = 1, 2
        pred = np.where(np.isin(gt, [1, 2][:found]), gt, 0)
        write_image(layout.dir / "images" / f"{image_id}.png", np.full((32, 32, 3), 90, dtype=np.uint8))
        write_label(layout.dir / "labels" / f"{image_id}.png", gt)
        write_label(pred_dir / f"{image_id}.png", pred)
    result = evaluate_predictions(layout.labels_dir, pred_dir, ids=["a", "b"])
    return layout, pred_dir, result


def test_a_wandb_run_gets_the_resolved_config_the_per_image_table_and_overlays(evaluated, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    layout, pred_dir, result = evaluated
    logger = WandbLogger(project="cellseg-test", save_dir=str(tmp_path), mode="offline")
    build_trainer(OmegaConf.create(RUN_CONFIG), callbacks=[], loggers=[logger])
    config = dict(logger.experiment.config)
    assert config["data"] == {"crop": 64, "tile": 64} and config["supervision"]["ratio"] == 0.3
    assert "hydra" not in config
    log_evaluation([logger], result, layout, pred_dir, "test", overlays=1)
    wandb.finish()

    media = sorted((tmp_path / "wandb").glob("offline-run-*/files/media"))[-1]
    (table_file,) = (media / "table" / "test").glob("per_image_*.table.json")
    table = json.loads(table_file.read_text())
    rows = {row[table["columns"].index("image_id")]: row for row in table["data"]}
    assert sorted(rows) == ["a", "b"]
    for image_id in ("a", "b"):
        assert rows[image_id][table["columns"].index("aji")] == pytest.approx(result.per_image.loc[image_id, "aji"])
    (overlay_file,) = (media / "images" / "test").glob("overlay_*.png")  # overlays=1: image `a` only
    overlay = np.asarray(Image.open(overlay_file).convert("RGB"))
    assert overlay.shape == (32, 32, 3)
    assert tuple(overlay[4, 6]) == PRED_COLOUR and tuple(overlay[8, 8]) == (90, 90, 90)


def test_loggers_without_tables_get_the_means_and_the_config(evaluated, tmp_path):
    layout, pred_dir, result = evaluated
    logger = CSVLogger(save_dir=str(tmp_path / "csv"), name="", version="")
    build_trainer(OmegaConf.create(RUN_CONFIG), callbacks=[], loggers=[logger])
    log_evaluation([logger], result, layout, pred_dir, "test", overlays=2)
    logger.save()
    hparams = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert hparams["data"] == {"crop": 64, "tile": 64} and hparams["seed"] == 3 and "hydra" not in hparams
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["test/aji"]) == pytest.approx(result.per_image_mean["aji"])
    assert result.per_image.loc["b", "aji"] < result.per_image.loc["a", "aji"] == pytest.approx(1.0)


def test_the_overlay_draws_prediction_over_ground_truth(evaluated):
    layout, pred_dir, _ = evaluated
    overlay = prediction_overlay(layout, pred_dir, "b")  # b: nucleus 2 missed, so only its GT outline shows
    assert tuple(overlay[4, 6]) == PRED_COLOUR and tuple(overlay[18, 20]) == GT_COLOUR
    assert tuple(overlay[22, 22]) == (90, 90, 90)
