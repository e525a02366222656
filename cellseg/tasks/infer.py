"""`python infer.py ckpt_path=RUN/checkpoints/last.ckpt input_dir=DIR`: instance maps and exports for new images.

The network is rebuilt from the inference recipe the checkpoint carries (cellseg.callbacks.inference_recipe:
model, module and data conventions, resolved at training time), so the `.ckpt` file needs nothing beside it;
checkpoints written before recipes existed fall back to their run folder's `.hydra/config.yaml`. Images get the
bit depth and intensity stretch the run trained with (`data.bit_depth`, `data.stretch_percentiles`).
`accelerator` takes Lightning's names (cpu, gpu, cuda, mps, auto).

Every file `read_image` reads is an input (IMAGE_FILE_SUFFIXES); other entries of `input_dir` are listed in a
warning. Outputs go to a folder per checkpoint and input (configs/hydra/infer.yaml). `slides=...` instead of
`input_dir=...` segments whole-slide images (cellseg/tasks/infer_slides.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from cellseg.callbacks.inference_recipe import build_recipe, stored_recipe
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
from cellseg.tasks.infer_slides import infer_slides
from cellseg.utils.checkpoints import read_checkpoint
from cellseg.utils.devices import torch_device
from cellseg.utils.io import IMAGE_FILE_SUFFIXES, read_image, write_label
from cellseg.utils.project import CONFIG_DIR, set_project_root_env

log = logging.getLogger(__name__)
OUTPUT_KINDS = ("png", "tiff", "geojson", "csv")


def load_run_config(ckpt_path: Path) -> DictConfig:
    """The training run's config, for checkpoints without a recipe: `<run>/.hydra/config.yaml` of the run folder
    holding the checkpoint, either `<run>/checkpoints/*.ckpt` or a stage's `<run>/<stage>/checkpoints/*.ckpt`."""
    folders = ckpt_path.resolve().parents
    candidates = [folder / ".hydra" / "config.yaml" for folder in list(folders)[1:3]]
    for run_config in candidates:
        if run_config.is_file():
            return OmegaConf.load(run_config)
    raise FileNotFoundError(f"checkpoint {ckpt_path} carries no inference recipe and has no run config beside it "
                            f"(looked for {', '.join(map(str, candidates))}): retrain with this version, or keep the "
                            "checkpoint in its run folder (<run>/checkpoints/ or <run>/<stage>/checkpoints/)")


def load_inference_model(ckpt_path: Path) -> tuple[pl.LightningModule, dict]:
    """The LightningModule of a checkpoint, in eval mode, and the recipe it was rebuilt from: the recipe the
    checkpoint carries (nothing else is read), else one built from the run folder's config."""
    checkpoint = read_checkpoint(ckpt_path, weights_only=False)
    recipe = stored_recipe(checkpoint) or build_recipe(load_run_config(ckpt_path))
    net = hydra.utils.instantiate(recipe["model"])
    module = hydra.utils.instantiate(recipe["module"], net=net)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), recipe


def infer(cfg: DictConfig) -> dict:
    """Images of `input_dir` or the slides of `slides` (exactly one of the two)."""
    if (cfg.get("input_dir") is None) == (cfg.get("slides") is None):
        raise ConfigError("give exactly one of input_dir=<folder of images> and slides=<slide, glob or list>")
    device = torch_device(cfg.accelerator)
    module, recipe = load_inference_model(Path(cfg.ckpt_path))
    module = module.to(device)
    module.inference.update({k: cfg.infer[k] for k in ("tile", "overlap", "hflip")})
    if cfg.get("slides") is not None:
        return infer_slides(cfg, module, stretch=input_conventions(recipe)[0], model_mpp=recipe["data"].get("mpp"))
    return infer_images(cfg, module, recipe)


def infer_images(cfg: DictConfig, module: pl.LightningModule, recipe: dict) -> dict:
    outputs = list(cfg.infer.outputs)
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown:
        raise ConfigError(f"infer.outputs has {unknown}; expected a subset of {list(OUTPUT_KINDS)}")
    input_dir, out_dir = Path(cfg.input_dir), Path(cfg.paths.output_dir)
    images = input_images(input_dir)
    stretch, bit_depth = input_conventions(recipe)
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


def input_conventions(recipe: dict) -> tuple[tuple[float, float] | None, int | None]:
    """(stretch percentiles, bit depth) the model trained with."""
    stretch = check_stretch(recipe["data"].get("stretch_percentiles"), key="the run's data.stretch_percentiles")
    bit_depth = check_bit_depth(recipe["data"].get("bit_depth"), key="the run's data.bit_depth")
    return stretch, bit_depth


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
                      simplify=infer_cfg.geojson.simplify, mpp=infer_cfg.get("mpp"))
    if "csv" in outputs:
        write_instances_csv(out_dir / "csv" / f"{image_id}.csv", label, image_id=image_id, image=image, scores=scores,
                            mpp=infer_cfg.get("mpp"))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
def main(cfg: DictConfig) -> None:
    run_task(cfg, infer)


set_project_root_env()
