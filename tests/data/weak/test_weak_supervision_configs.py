"""configs/supervision/*.yaml instantiate the right WeakLabels with the interpolated keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cellseg.data.weak import FullLabels, NoLabels, ScribbleLabels

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "supervision"


def build(name: str, cache_dir: Path, **overrides):
    supervision = OmegaConf.load(CONFIGS / f"{name}.yaml")
    root = OmegaConf.create({"paths": {"cache_dir": str(cache_dir)}, "supervision": supervision})
    for key, value in overrides.items():
        OmegaConf.update(root, f"supervision.{key}", value)
    return root.supervision, instantiate(root.supervision.generator)


@pytest.mark.parametrize(
    "name, cls", [("full", FullLabels), ("annotation_free", NoLabels), ("scribble", ScribbleLabels)]
)
def test_config_builds_its_generator(name, cls, tmp_path):
    node, generator = build(name, tmp_path)
    assert type(generator) is cls
    assert node.kind == generator.kind == name


def test_scribble_config_values_and_override(tmp_path):
    _, generator = build("scribble", tmp_path)
    assert (generator.ratio, generator.seed, generator.ignore_index) == (0.3, 0, 255)
    assert generator.cache_dir == tmp_path / "weak_labels"
    assert generator.corner_params == {
        "harris_k": 0.05,
        "harris_sigma": 1.0,
        "min_distance": 5,
        "threshold_rel": 0.1,
        "exclude_border": True,
    }
    _, swept = build("scribble", tmp_path, ratio=0.1, seed=3)
    assert (swept.ratio, swept.seed) == (0.1, 3)
    with pytest.raises(Exception, match="supervision.ratio"):
        build("scribble", tmp_path, ratio=2.0)
