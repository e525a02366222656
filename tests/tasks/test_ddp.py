"""Two CPU processes (gloo) train a few steps; their validation metrics equal one process on the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from cellseg.data.weak import FullLabels

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ddp_validation_metrics_equal_single_process(tmp_path, train_config):
    out = tmp_path / "ddp"
    # 3 hold-out images over 2 ranks: the distributed sampler pads one duplicate, which the metric must drop.
    overrides = ["debug=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.sync_batchnorm=false", "data.val_holdout=3", "test=false", "logger=csv",
                 f"hydra.run.dir={out}", f"paths.cache_dir={tmp_path / 'cache'}", "model=unet_small"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *overrides],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = pd.read_csv(out / "csv" / "metrics.csv")
    ddp_values = logged.dropna(subset=["val/aji"]).iloc[-1]

    cfg = train_config("data.val_holdout=3", "model=unet_small")
    datamodule = hydra.utils.instantiate(cfg.data, weak_labels=FullLabels())
    module = hydra.utils.instantiate(cfg.method.module, net=hydra.utils.instantiate(cfg.model))
    module.load_state_dict(torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    for key in ("val/aji", "val/pq", "val/dice", "val/aji_pooled"):
        assert single[key] == pytest.approx(float(ddp_values[key]), abs=1e-6), key
