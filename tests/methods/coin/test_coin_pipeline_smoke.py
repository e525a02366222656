"""`train.py method=coin` end to end on the bundled sample (debug=smoke, one round, one step): metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from coin_pipeline_synth import compose_coin

from cellseg.metrics import instance_metrics
from cellseg.pipeline.checks import check_supervision
from cellseg.tasks.train import train
from cellseg.utils.io import read_label

torch.set_num_threads(1)


def test_method_coin_runs_every_stage_and_writes_metrics(tmp_path, sample_data):
    cfg = compose_coin(tmp_path, "debug=smoke", "method.rounds=1", "data.max_images=3")
    check_supervision(cfg)
    assert cfg.supervision.kind == "annotation_free" and cfg.method.prompter.method == "local_otsu"
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    for key in ("ucis_0", "propagate_0", "pseudo_0", "train_1", "evaluate_1"):
        assert (out / key / "done.json").is_file(), key
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_images"] == 3 and "aji" in summary["per_image_mean"]
    preds = sorted((out / "evaluate_1" / "predictions" / "test").glob("*.png"))
    assert len(preds) == 3
    gt_dir = sample_data / "MoNuSegSample" / "test" / "labels"
    dice = [instance_metrics(read_label(gt_dir / p.name), read_label(p))["dice"] for p in preds]
    assert metrics["test/dice"] == pytest.approx(sum(dice) / 3, abs=1e-9)
    assert len(list((out / "pseudo_0" / "labels").glob("*.png"))) == 3
