"""Runs that would report something untrue are refused before any work; run folders never mix two runs."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import InstantiationException
from test_cli import run

from cellseg.pipeline.checks import ConfigError
from cellseg.tasks.train import check_run_request, prepare_run_folder, train
from cellseg.utils.checkpoints import CheckpointError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train=false"], r"train=false needs ckpt_path"),
        (["train=false", "test=false"], r"nothing to do"),
        (["train=false", "ckpt_path=last"], r"ckpt_path=last but .*last\.ckpt does not exist"),
        (["trainer.max_steps=0"], r"trainer\.max_steps=0 trains nothing"),
        (["trainer.max_epochs=0"], r"trainer\.max_epochs=0 trains nothing"),
    ],
)
def test_untrained_or_empty_requests_are_refused(train_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_run_request(train_config(*overrides))


@pytest.mark.parametrize(
    ("overrides", "node", "message"),
    [
        (["data.crop=0"], "data", r"data\.crop=0"),
        (["data.batch_size=-2"], "data", r"data\.batch_size=-2"),
        (["method.module.inference.tile=0"], "module", r"inference\.tile=0"),
        (["method.module.inference.batch_size=0"], "module", r"inference\.batch_size=0"),
    ],
)
def test_non_positive_sizes_name_their_key(train_config, overrides, node, message):
    cfg = train_config(*overrides)
    with pytest.raises((ValueError, InstantiationException), match=message):  # Hydra wraps constructor errors
        if node == "data":
            hydra.utils.instantiate(cfg.data)
        else:
            hydra.utils.instantiate(cfg.method.module, net=hydra.utils.instantiate(cfg.model))


def test_a_fresh_run_never_mixes_with_an_earlier_runs_checkpoints(train_config):
    first = train_config("test=false", "trainer.max_steps=2")
    train(first)
    out = first.paths.output_dir
    with pytest.raises(ConfigError, match=r"already holds checkpoints .*ckpt_path=last.*overwrite=true"):
        prepare_run_folder(train_config("test=false"))
    prepare_run_folder(train_config("test=false", "ckpt_path=last"))  # resuming is what the folder is for
    assert (Path(out) / "checkpoints" / "last.ckpt").is_file()
    prepare_run_folder(train_config("test=false", "overwrite=true"))
    assert not (Path(out) / "checkpoints").exists()


def test_last_checkpoint_holds_the_final_step_and_is_never_versioned(train_config):
    cfg = train_config("test=false", "trainer.max_steps=5", "callbacks.last_checkpoint.every_n_train_steps=2")
    train(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 5
    resumed = train_config("test=false", "trainer.max_steps=7", "ckpt_path=last")
    train(resumed)
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 7
    assert sorted(p.name for p in folder.glob("last*")) == ["last.ckpt"]


@pytest.mark.parametrize("ckpt", ["given", "last"])
def test_a_truncated_checkpoint_is_refused_naming_the_file(train_config, tmp_path, ckpt):
    first = train_config("test=false", "trainer.max_steps=2")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    broken = last if ckpt == "last" else tmp_path / "copied.ckpt"
    data = last.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{broken.name}.*truncated"):
        check_run_request(train_config("train=false", f"ckpt_path={'last' if ckpt == 'last' else broken}"))
    with pytest.raises(CheckpointError, match=broken.name):
        check_run_request(train_config("trainer.max_steps=4", f"ckpt_path={'last' if ckpt == 'last' else broken}"))


def test_cli_refusal_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = run("train.py", "debug=smoke", "train=false", f"hydra.run.dir={out}")
    assert result.returncode != 0 and "train=false needs ckpt_path" in result.stderr
    assert not (out / "metrics.json").exists() and not (out / "run_info.json").exists()


def test_failed_eval_leaves_no_stale_metrics_and_is_marked_failed(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"per_image_mean": {"aji": 0.9}}))
    (out / "per_image.csv").write_text("id,aji\nx,0.9\n")
    result = run("eval.py", "data=sample", f"pred_dir={tmp_path / 'absent'}", f"hydra.run.dir={out}")
    assert result.returncode != 0 and "pred_dir=" in result.stderr
    assert not (out / "metrics.json").exists() and not (out / "per_image.csv").exists()
    info = json.loads((out / "run_info.json").read_text())
    assert info["status"] == "failed" and "pred_dir=" in info["error"]
