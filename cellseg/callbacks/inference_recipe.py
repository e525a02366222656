"""Checkpoints that carry their own inference recipe, so `infer.py ckpt_path=<file>` needs nothing beside it.

The recipe is the resolved config of what inference rebuilds: the network (`model`), the LightningModule
(`method.module`, which holds the post-processing and tiling settings) and the input conventions of the data the
run trained on (`bit_depth`, `stretch_percentiles`, `mpp`). Weight files named in `model` (`weights`,
`weights_sha256`) are cleared in the recipe: the checkpoint's state_dict holds every weight, so a model trained
from a local weights file still loads after that file has moved. Plain containers only, so the checkpoint stays
loadable with `weights_only=True`.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

RECIPE_KEY = "cellseg_inference"
RECIPE_VERSION = 1
DATA_KEYS = ("bit_depth", "stretch_percentiles", "mpp", "name")
WEIGHT_FILE_KEYS = ("weights", "weights_sha256")


class InferenceRecipe(pl.Callback):
    """Writes `recipe` into every checkpoint the trainer saves (under `RECIPE_KEY`)."""

    def __init__(self, recipe: dict) -> None:
        self.recipe = recipe

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RECIPE_KEY] = copy.deepcopy(self.recipe)


def build_recipe(cfg: DictConfig, module_key: str = "method.module") -> dict:
    """The recipe of run config `cfg`: resolved `model`, `cfg[module_key]` and the data keys of DATA_KEYS."""
    module = OmegaConf.select(cfg, module_key)
    if module is None:
        raise KeyError(f"{module_key}: the run config has no such node; expected the LightningModule's config")
    data = cfg.get("data") or {}
    return {
        "version": RECIPE_VERSION,
        "model": without_weight_files(OmegaConf.to_container(cfg.model, resolve=True)),
        "module": OmegaConf.to_container(module, resolve=True),
        "data": {key: _plain(data.get(key)) for key in DATA_KEYS},
    }


def without_weight_files(node):
    """A copy of a model config with every `weights`/`weights_sha256` entry set to None, at any depth."""
    if isinstance(node, dict):
        return {k: (None if k in WEIGHT_FILE_KEYS else without_weight_files(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [without_weight_files(v) for v in node]
    return node


def stored_recipe(checkpoint: dict) -> dict | None:
    """The recipe a checkpoint carries, or None for a checkpoint written before recipes existed."""
    recipe = checkpoint.get(RECIPE_KEY)
    if recipe is None:
        return None
    version = recipe.get("version") if isinstance(recipe, dict) else None
    if version != RECIPE_VERSION:
        raise ValueError(f"checkpoint's {RECIPE_KEY} has version {version}; expected {RECIPE_VERSION}")
    return recipe


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
