"""Project root discovery and run bookkeeping (resolved config, git SHA, seed, package versions)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellseg.utils.io import atomic_path, write_json

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
VERSIONED_PACKAGES = (
    "cellseg", "torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "numpy",
    "scikit-image", "segmentation-models-pytorch", "timm", "torchmetrics", "pot", "segment-anything", "wandb",
)


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder holding `.project-root`, from `start` (default: this package's checkout) upwards."""
    for folder in [start or PACKAGE_ROOT, *(start or PACKAGE_ROOT).parents]:
        if (folder / ".project-root").is_file():
            return folder
    return Path.cwd()


def set_project_root_env() -> Path:
    """Set PROJECT_ROOT (read by configs/paths) unless the user already did."""
    root = Path(os.environ.get("PROJECT_ROOT") or find_project_root())
    os.environ["PROJECT_ROOT"] = str(root)
    return root


def git_sha(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


RUN_INFO = "run_info.json"


def save_run_info(cfg: DictConfig, output_dir: Path) -> None:
    """Resolved config (config_resolved.yaml) and run_info.json (status `running`) in the run folder."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir / "config_resolved.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    root = Path(cfg.paths.root_dir)
    write_json(
        output_dir / RUN_INFO,
        {
            "status": "running",
            "started": time.time(),
            "git_sha": git_sha(root),
            "seed": cfg.get("seed"),
            "command": sys.argv,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
        },
    )


def set_run_status(output_dir: Path, status: str, error: str | None = None) -> None:
    """Mark the run `completed` or `failed` (with the error) in its run_info.json."""
    path = Path(output_dir) / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        info = {}
    info.update(status=status, finished=time.time(), error=error)
    write_json(path, info)


# Absolute, so the entry points find the configs whatever the working directory or import path.
CONFIG_DIR = str(PACKAGE_ROOT / "configs")
