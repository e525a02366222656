"""The inference recipe written into checkpoints: resolved, weight files cleared at any depth, versioned."""

import pytest
from omegaconf import OmegaConf

from cellseg.callbacks.inference_recipe import RECIPE_KEY, InferenceRecipe, build_recipe, stored_recipe


def run_config():
    return OmegaConf.create({
        "seed": 3,
        "data": {"name": "monuseg", "mpp": 0.25, "bit_depth": None, "stretch_percentiles": [1, 99], "root": "/d"},
        "model": {"_target_": "m.Net", "classes": "${method.module.num_classes}", "weights": "/w/enc.pth",
                  "weights_sha256": "ab12", "detector": {"weights": "/w/coco.pth", "layers": [{"weights": "x"}]}},
        "method": {"module": {"_target_": "m.Module", "num_classes": 3, "seed": "${seed}"}},
    })


def test_recipe_is_resolved_and_clears_every_weight_file():
    recipe = build_recipe(run_config())
    assert recipe["model"] == {"_target_": "m.Net", "classes": 3, "weights": None, "weights_sha256": None,
                               "detector": {"weights": None, "layers": [{"weights": None}]}}
    assert recipe["module"] == {"_target_": "m.Module", "num_classes": 3, "seed": 3}
    assert recipe["data"] == {"bit_depth": None, "stretch_percentiles": [1, 99], "mpp": 0.25, "name": "monuseg"}


def test_every_saved_checkpoint_carries_the_recipe_and_other_versions_are_refused():
    checkpoint = {"state_dict": {}}
    InferenceRecipe(build_recipe(run_config())).on_save_checkpoint(None, None, checkpoint)
    assert stored_recipe(checkpoint)["module"]["num_classes"] == 3
    assert stored_recipe({"state_dict": {}}) is None
    with pytest.raises(ValueError, match="version 99"):
        stored_recipe({RECIPE_KEY: {"version": 99}})


def test_a_missing_module_node_is_named():
    with pytest.raises(KeyError, match="method.detector_module"):
        build_recipe(run_config(), "method.detector_module")
