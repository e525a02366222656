"""Project root discovery and run bookkeeping (resolved config, git SHA, seed, package versions)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellseg.utils.io import atomic_path, write_json
from cellseg.utils.run_record import resources_used, run_record

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
    """Set PROJECT_ROOT (read by configs/paths) unless the user already did, and register the project's OmegaConf
    resolvers: what every entry point needs before Hydra composes its config."""
    root = Path(os.environ.get("PROJECT_ROOT") or find_project_root())
    os.environ["PROJECT_ROOT"] = str(root)
    register_resolvers()
    return root


def register_resolvers() -> None:
    """`${cellseg.checkpoint_tag:PATH}` and `${cellseg.input_tag:DIR}` (configs/infer.yaml's run folder),
    `${cellseg.sweep_id:}` (the multirun folder, configs/hydra/default.yaml)."""
    for name, function in (("cellseg.checkpoint_tag", checkpoint_tag), ("cellseg.input_tag", input_tag),
                           ("cellseg.sweep_id", sweep_id)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


SWEEP_ID_ENV = "CELLSEG_SWEEP_ID"


def sweep_id() -> str:
    """One name per multirun, the same in the launching process and in every job it starts (local subprocesses
    and SLURM jobs inherit the environment, requeued jobs too): $CELLSEG_SWEEP_ID, set from the clock on first
    use. Hydra's `${now:}` would be read again in each job process, giving each job its own parent folder.
    Set CELLSEG_SWEEP_ID yourself to resubmit a sweep into the same folders (its jobs then resume)."""
    if not os.environ.get(SWEEP_ID_ENV):
        os.environ[SWEEP_ID_ENV] = time.strftime("%Y-%m-%d_%H-%M-%S")
    return os.environ[SWEEP_ID_ENV]


def _path_hash(path) -> str:
    """8 hex digits of the absolute, resolved path (relative paths from the working directory)."""
    return hashlib.sha256(str(Path(str(path)).expanduser().resolve()).encode()).hexdigest()[:8]


def checkpoint_tag(ckpt_path) -> str:
    """`<training run name>-<checkpoint stem>-<hash of its absolute path>` for `<run>/checkpoints/<stem>.ckpt`.

    The run name is `<experiment_name>-seed<seed>` from the run's saved config (`<run>/.hydra/config.yaml`),
    else the run folder's name; the hash keeps two runs of the same name (a sweep) apart. Never raises: a
    missing or unreadable run config is reported by infer.py itself, with its own clear error.
    """
    path = Path(str(ckpt_path)).expanduser()
    run_dir = path.absolute().parent.parent
    name = run_dir.name
    try:
        run_cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        name = f"{run_cfg.experiment_name}-seed{run_cfg.seed}"
    except Exception:  # noqa: BLE001 - any problem with the run config falls back to the folder name
        pass
    return _safe_name(f"{name}-{path.stem}-{_path_hash(path)}")


def input_tag(input_dir, slides=None) -> str:
    """`<input folder name>-<hash of its absolute path>`: two folders of the same name never share outputs;
    `slides-<hash of the slides= value>` for slide inputs."""
    if input_dir is None:
        spec = list(slides) if OmegaConf.is_list(slides) else slides
        return _safe_name(f"slides-{hashlib.sha256(str(spec).encode()).hexdigest()[:8]}")
    path = Path(str(input_dir)).expanduser()
    return _safe_name(f"{path.resolve().name or 'root'}-{_path_hash(path)}")


def _safe_name(text: str) -> str:
    """A single path component: separators and characters shells or Hydra trip over become '_'."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text)


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
            "record": run_record(cfg),
        },
    )


def read_run_info(output_dir: Path) -> dict:
    try:
        return json.loads((Path(output_dir) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}


def update_run_record(output_dir: Path, **fields) -> None:
    """Add what is known only once the run has worked (e.g. the annotation it trained on) to run_info's record;
    a folder without run_info.json (a task called outside `run_task`) is left alone."""
    if not (Path(output_dir) / RUN_INFO).is_file():
        return
    info = read_run_info(output_dir)
    info["record"] = {**info.get("record", {}), **fields}
    write_json(Path(output_dir) / RUN_INFO, info)


def set_run_status(output_dir: Path, status: str, error: str | None = None) -> None:
    """Mark the run `completed` or `failed` (with the error) in its run_info.json."""
    info = read_run_info(output_dir)
    info.update(status=status, finished=time.time(), error=error, resources=resources_used(info.get("started")))
    write_json(Path(output_dir) / RUN_INFO, info)


# Absolute, so the entry points find the configs whatever the working directory or import path: the package's
# `configs` (a link to the checkout's top-level configs/, a copy inside an installed wheel).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
