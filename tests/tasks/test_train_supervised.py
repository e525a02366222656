"""The supervised baseline end to end on the bundled sample: fit, checkpoint selection, test metrics, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cellseg.metrics import instance_metrics
from cellseg.tasks.train import train
from cellseg.utils.io import read_label

torch.set_num_threads(2)


def run_dir(cfg) -> Path:
    return Path(cfg.paths.output_dir)


def test_smoke_run_writes_checkpoints_predictions_and_metrics(train_config, sample_data):
    cfg = train_config("data.val_holdout=1")
    metrics = train(cfg)
    out = run_dir(cfg)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_images"] == 3
    for key in ("aji", "aji_plus", "pq", "dq", "sq", "f1_obj", "dice", "iou_fg", "miou_bin"):
        assert key in summary["per_image_mean"] and key in summary["pooled"]
    assert "val/aji" in metrics and "test/aji" in metrics
    # metrics.json agrees with scoring the written predictions directly
    preds = sorted((out / "predictions" / "test").glob("*.png"))
    assert len(preds) == 3
    gt_dir = sample_data / "MoNuSegSample" / "test" / "labels"
    direct = [instance_metrics(read_label(gt_dir / p.name), read_label(p))["dice"] for p in preds]
    assert summary["per_image_mean"]["dice"] == pytest.approx(sum(direct) / 3, abs=1e-9)


def test_same_seed_same_metrics_on_cpu(train_config):
    first = train(train_config("trainer.deterministic=true"))
    second = train(train_config("trainer.deterministic=true"))
    assert first["test/aji"] == second["test/aji"] and first["test/dice"] == second["test/dice"]
    assert first["train/loss"] == second["train/loss"]


def test_resume_continues_from_the_checkpoint(train_config, tmp_path):
    cfg = train_config("trainer.max_steps=2", "test=false")
    train(cfg)
    last = run_dir(cfg) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    resumed = train_config("trainer.max_steps=4", "test=false", f"ckpt_path={last}")
    train(resumed)
    assert torch.load(last, weights_only=False)["global_step"] == 4


def test_ckpt_path_last_without_checkpoint_starts_fresh(train_config):
    cfg = train_config("ckpt_path=last", "test=false", "trainer.max_steps=1")
    train(cfg)
    assert (run_dir(cfg) / "checkpoints" / "last.ckpt").is_file()


def test_missing_ckpt_path_is_named(train_config):
    with pytest.raises(FileNotFoundError, match="ckpt_path=/nowhere.ckpt"):
        train(train_config("ckpt_path=/nowhere.ckpt"))
