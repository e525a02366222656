"""Every config composes and instantiates; bad combinations stop before any work with a clear message."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch

from cellseg.pipeline.checks import ConfigError, check_monitors, check_supervision
from cellseg.pipeline.trainer import instantiate_list

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_instantiates(train_config, data):
    cfg = train_config(f"data={data}")
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, pl.LightningDataModule)
    assert datamodule.name == cfg.data.name


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_builds_a_module(train_config, model):
    cfg = train_config(f"model={model}")
    net = hydra.utils.instantiate(cfg.model)
    assert isinstance(net, torch.nn.Module)


@pytest.mark.parametrize("method", options("method"))
def test_every_method_composes_with_its_default_supervision(train_config, method):
    cfg = train_config(f"method={method}")
    check_supervision(cfg)
    assert cfg.supervision.kind in cfg.method.supervision_kinds
    assert cfg.model is not None


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_config_instantiates(train_config, logger):
    cfg = train_config(f"logger={logger}")
    loggers = instantiate_list(cfg.logger)
    assert loggers and all(isinstance(item, pl.loggers.Logger) for item in loggers)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config_composes(train_config, trainer):
    cfg = train_config(f"trainer={trainer}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(train_config, experiment):
    cfg = train_config(f"experiment={experiment}")
    check_supervision(cfg)
    check_monitors(cfg)
    assert cfg.experiment_name == experiment


def test_callbacks_instantiate(train_config):
    callbacks = instantiate_list(train_config().callbacks)
    assert any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)


def test_incompatible_supervision_names_both(train_config):
    cfg = train_config("method=supervised", "supervision=annotation_free")
    with pytest.raises(ConfigError, match="method=supervised.*supervision=annotation_free"):
        check_supervision(cfg)


@pytest.mark.parametrize("monitor", ["test/aji", "oracle/aji"])
def test_selection_never_monitors_test_or_oracle_keys(train_config, monitor):
    cfg = train_config(f"callbacks.model_checkpoint.monitor={monitor}")
    with pytest.raises(ConfigError, match=monitor):
        check_monitors(cfg)


def test_all_paths_are_absolute(train_config):
    cfg = train_config()
    for key in ("root_dir", "data_dir", "cache_dir", "weights_dir", "log_dir", "output_dir"):
        assert Path(cfg.paths[key]).is_absolute(), key


def test_one_lightning_namespace_everywhere():
    """Mixing the `lightning` package namespace with `pytorch_lightning` breaks (ValueError("Expected a parent"))."""
    forbidden = "lightning" + ".pytorch"
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("cellseg", "configs", "tests", "benchmarks", "sweeps")
        for path in (REPO_ROOT / folder).rglob("*")
        if path.suffix in (".py", ".yaml") and forbidden in path.read_text(errors="ignore")
    ]
    assert offenders == []


def test_incompatible_pair_stops_before_any_work_from_the_command_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "method=supervised", "supervision=annotation_free",
         f"paths.log_dir={tmp_path}", "extras.print_config=false"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "method=supervised does not support supervision=annotation_free" in result.stderr
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("run_info.json"))
