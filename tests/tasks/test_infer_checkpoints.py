"""A checkpoint is self-contained: an S2L model trained from a local weights file still infers, from the .ckpt
alone, after the weights file and the whole run folder are gone (COIN rounds and the Cyclic detector are
checked in their pipeline tests, the supervised baseline in test_cli)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from cellseg.models import build_segmentation_model
from cellseg.tasks.infer import load_inference_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = REPO_ROOT / "data" / "sample" / "MoNuSegSample" / "test" / "images"


def test_s2l_trained_from_a_weights_file_infers_without_the_file_or_its_run_folder(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "weights" / "unet_small.pth"
    weights.parent.mkdir()
    net = build_segmentation_model(arch="unet", encoder="resnet18", classes=2,
                                   decoder_channels=[128, 64, 32, 16, 8])
    torch.save(net.state_dict(), weights)
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "debug=smoke", "method=s2l",
                             "model=unet_small", f"model.weights={weights}", "test=false",
                             f"hydra.run.dir={run}", f"paths.cache_dir={tmp_path / 'cache'}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    image = torch.rand(3, 96, 96)
    before, recipe = load_inference_model(run / "checkpoints" / "last.ckpt")
    assert recipe["model"]["weights"] is None and recipe["data"]["name"] == "sample"
    expected = before.predict_instances(image)

    lone = Path(shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "s2l.ckpt"))
    shutil.rmtree(run)
    shutil.rmtree(weights.parent)
    module, _ = load_inference_model(lone)
    np.testing.assert_array_equal(module.predict_instances(image), expected)
    assert type(module).__name__ == type(before).__name__
