"""W&B sweep files are generated from the same search spaces as the Optuna studies and read back to them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cellseg.sweeps.search_space import from_wandb_parameters, space_of, to_wandb_parameters
from cellseg.sweeps.wandb_sweep import sweep_configuration

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted(p.stem for p in (ROOT / "configs" / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("name", SPACES)
def test_every_space_round_trips_through_wandb(name):
    params = OmegaConf.load(ROOT / "configs" / "hparams_search" / f"{name}.yaml").hparams_search.params
    space = space_of(params)
    assert from_wandb_parameters(to_wandb_parameters(space)) == space


@pytest.mark.parametrize("name", SPACES)
def test_the_shipped_wandb_file_is_what_the_space_generates(name):
    shipped = yaml.safe_load((ROOT / "sweeps" / "wandb" / f"{name}.yaml").read_text())
    overrides = [c for c in shipped["command"] if not c.startswith(("${", "logger=", "hydra.run.dir="))]
    assert f"hparams_search={name}" in overrides
    assert sweep_configuration(overrides) == shipped


def test_hand_built_space_maps_to_the_documented_wandb_distributions():
    space = space_of({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                      "k": {"type": "int", "low": 10, "high": 60, "step": 10},
                      "n": {"type": "int", "low": 1, "high": 4},
                      "w": {"type": "float", "low": 0.0, "high": 1.0, "log": False},
                      "model": {"type": "categorical", "choices": ["unet", "fpn"]}})
    assert to_wandb_parameters(space) == {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "k": {"distribution": "q_uniform", "min": 10, "max": 60, "q": 10},
        "n": {"distribution": "int_uniform", "min": 1, "max": 4},
        "w": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        "model": {"values": ["unet", "fpn"]}}


@pytest.mark.parametrize("spec,message", [({"type": "normal"}, "expected one of"),
                                          ({"type": "float", "low": 1, "high": 0}, "low < high"),
                                          ({"type": "categorical", "choices": []}, "non-empty")])
def test_bad_space_entries_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        space_of({"x": spec})
