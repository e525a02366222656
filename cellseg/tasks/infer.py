"""`python infer.py ckpt_path=RUN/checkpoints/last.ckpt input_dir=DIR`: instance maps and exports for new images.

The network is rebuilt from the training run's own config (`<run>/.hydra/config.yaml`, beside `checkpoints/`),
and images get the bit depth and intensity stretch the run trained with (`data.bit_depth`,
`data.stretch_percentiles`). Every file `read_image` reads is an input (IMAGE_FILE_SUFFIXES); other entries of
`input_dir` are listed in a warning. Outputs go to a folder per checkpoint and input folder (configs/infer.yaml).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from cellseg.data.intensity import (
    check_bit_depth,
    check_stretch,
    describe_bit_depths,
    prepare_image,
    stretch_intensity,
)
from cellseg.data.transforms import to_normalised_tensor
from cellseg.inference.writers import write_geojson, write_instance_tiff, write_instances_csv
from cellseg.pipeline.checks import ConfigError
from cellseg.tasks.common import run_task
from cellseg.utils.checkpoints import read_checkpoint
from cellseg.utils.io import IMAGE_FILE_SUFFIXES, read_image, write_label
from cellseg.utils.project import CONFIG_DIR, set_project_root_env

log = logging.getLogger(__name__)
OUTPUT_KINDS = ("png", "tiff", "geojson", "csv")


def load_run_config(ckpt_path: Path) -> DictConfig:
    """The training run's config: `<run>/.hydra/config.yaml` of the run folder holding the checkpoint, either
    `<run>/checkpoints/*.ckpt` or a pipeline stage's `<run>/<stage>/checkpoints/*.ckpt` (COIN rounds, Cyclic)."""
    folders = ckpt_path.resolve().parents
    candidates = [folder / ".hydra" / "config.yaml" for folder in list(folders)[1:3]]
    for run_config in candidates:
        if run_config.is_file():
            return OmegaConf.load(run_config)
    raise FileNotFoundError(f"no run config for checkpoint {ckpt_path} (looked for {', '.join(map(str, candidates))}): "
                            "expected <run>/checkpoints/*.ckpt or <run>/<stage>/checkpoints/*.ckpt")


def load_module_from_checkpoint(ckpt_path: Path, train_cfg: DictConfig):
    """Rebuild model + LightningModule from the run's config, then load the checkpoint's weights."""
    net = hydra.utils.instantiate(train_cfg.model)
    module = hydra.utils.instantiate(train_cfg.method.module, net=net)
    state = read_checkpoint(ckpt_path, weights_only=False)
    module.load_state_dict(state["state_dict"])
    return module.eval()


def infer(cfg: DictConfig) -> dict:
    outputs = list(cfg.infer.outputs)
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown:
        raise ConfigError(f"infer.outputs has {unknown}; expected a subset of {list(OUTPUT_KINDS)}")
    input_dir, out_dir = Path(cfg.input_dir), Path(cfg.paths.output_dir)
    images = input_images(input_dir)
    train_cfg = load_run_config(Path(cfg.ckpt_path))
    stretch = check_stretch(train_cfg.data.get("stretch_percentiles"), key="the run's data.stretch_percentiles")
    bit_depth = check_bit_depth(train_cfg.data.get("bit_depth"), key="the run's data.bit_depth")
    module = load_module_from_checkpoint(Path(cfg.ckpt_path), train_cfg).to(cfg.accelerator)
    module.inference.update({k: cfg.infer[k] for k in ("tile", "overlap", "hflip")})
    depths = []
    for path in tqdm(images, desc="inference"):
        stored = read_image(path)
        image, depth = prepare_image(stored, bit_depth, None, source=path)  # unstretched: the CSV's intensities
        depths.append((stored.dtype.name, depth))
        label, scores = module.predict_scored_instances(to_normalised_tensor(stretch_intensity(image, stretch)))
        write_outputs(out_dir, path.stem, image, label, outputs, cfg.infer, scores)
    log.info(describe_bit_depths(f"input {input_dir}", depths, bit_depth))
    log.info("wrote %s for %d images into %s", ", ".join(outputs), len(images), out_dir)
    return {"images": len(images)}


def input_images(input_dir: Path) -> list[Path]:
    """The image files of `input_dir` (sorted); every other entry is named in one warning, none skipped
    silently. A missing folder or one without any image raises FileNotFoundError naming `input_dir=`."""
    entries = sorted(input_dir.iterdir()) if input_dir.is_dir() else []
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_FILE_SUFFIXES]
    if not images:
        raise FileNotFoundError(f"input_dir={input_dir} holds no image ({', '.join(IMAGE_FILE_SUFFIXES)})")
    others = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in images]
    if others:
        log.warning("input_dir=%s: %d entries are not images (%s) and are not processed: %s", input_dir,
                    len(others), "/".join(IMAGE_FILE_SUFFIXES), ", ".join(others))
    return images


def write_outputs(out_dir: Path, image_id: str, image, label, outputs, infer_cfg, scores=None) -> None:
    """The requested outputs of one image; `scores` ({instance id: confidence}, detectors only) go into the
    GeoJSON measurements and the CSV's score column."""
    if "png" in outputs:
        write_label(out_dir / "instances" / f"{image_id}.png", label)
    if "tiff" in outputs:
        write_instance_tiff(out_dir / "tiff" / f"{image_id}.tif", label, mpp=infer_cfg.get("mpp"))
    if "geojson" in outputs:
        write_geojson(out_dir / "geojson" / f"{image_id}.geojson", label, scores=scores,
                      simplify=infer_cfg.geojson.simplify)
    if "csv" in outputs:
        write_instances_csv(out_dir / "csv" / f"{image_id}.csv", label, image_id=image_id, image=image, scores=scores)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
def main(cfg: DictConfig) -> None:
    run_task(cfg, infer)


set_project_root_env()
