"""The infer.py run-folder resolvers: one folder per checkpoint and input folder, never shared by accident."""

from __future__ import annotations

from omegaconf import OmegaConf

from cellseg.utils.project import checkpoint_tag, input_tag, register_resolvers


def test_the_checkpoint_tag_names_the_run_from_its_config_and_keeps_same_named_runs_apart(tmp_path):
    for sweep in ("a", "b"):
        (tmp_path / sweep / "run" / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"experiment_name": "sup_${name}", "name": "x", "seed": 7}),
                       tmp_path / sweep / "run" / ".hydra" / "config.yaml")
    first = checkpoint_tag(tmp_path / "a" / "run" / "checkpoints" / "last.ckpt")
    second = checkpoint_tag(tmp_path / "b" / "run" / "checkpoints" / "last.ckpt")
    assert first.startswith("sup_x-seed7-last-") and second.startswith("sup_x-seed7-last-") and first != second
    # without a readable run config: the run folder's name (infer.py itself reports the missing config)
    assert checkpoint_tag(tmp_path / "bare" / "checkpoints" / "epoch=3.ckpt").startswith("bare-epoch=3-")


def test_the_input_tag_differs_for_same_named_folders_and_is_stable(tmp_path, monkeypatch):
    one, two = tmp_path / "x" / "images", tmp_path / "y" / "images"
    assert input_tag(one).startswith("images-") and input_tag(one) != input_tag(two)
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / "x")  # a relative input_dir means the same folder as its absolute path
    assert input_tag("images") == input_tag(one) and input_tag("./images/") == input_tag(one)
    assert input_tag(tmp_path / "a b" / "in?").startswith("in_-")  # one safe path component


def test_resolvers_are_registered_once_for_configs(tmp_path):
    register_resolvers()
    register_resolvers()
    cfg = OmegaConf.create({"d": "${cellseg.input_tag:" + str(tmp_path / "imgs") + "}"})
    assert cfg.d == input_tag(tmp_path / "imgs")
