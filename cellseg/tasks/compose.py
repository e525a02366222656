"""Compose the project's configs outside `@hydra.main` (sweep drivers, notebooks, tests)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from cellseg.utils.project import CONFIG_DIR, set_project_root_env


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python <config_name>.py <overrides>` would see, writing into `output_dir`.

    Inside a running Hydra app (a search worker composing its trials) the app's config search path is used and
    the app's HydraConfig is restored afterwards; the trial's `paths` are resolved before that.
    """
    set_project_root_env()
    in_app = GlobalHydra.instance().is_initialized()
    app_hydra = HydraConfig.instance().cfg if in_app else None
    if in_app:
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} interpolations
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths = OmegaConf.to_container(cfg.paths, resolve=True)
        del cfg.hydra
    if in_app:
        HydraConfig.instance().cfg = app_hydra
    else:
        GlobalHydra.instance().clear()
    return cfg
