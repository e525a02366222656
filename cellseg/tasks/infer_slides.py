"""`python infer.py ckpt_path=X.ckpt slides='DIR/*.svs'`: whole-slide images, one folder per slide.

Each slide is segmented by `cellseg.inference.slide_inference` (read at the model's resolution, background
skipped, chunks stitched exactly, bounded memory, resumable) into `<output_dir>/slides/<slide name>/`; a slide
whose `done.json` matches the run is skipped (docs/framework.md#whole-slide-inference).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, ListConfig

from cellseg.data.intensity import prepare_image, stretch_intensity
from cellseg.data.transforms import to_normalised_tensor
from cellseg.inference.slide_inference import SlideSegmentation, SlideSettings
from cellseg.inference.slide_reader import SLIDE_SUFFIXES, SlideReader
from cellseg.pipeline.checks import ConfigError

log = logging.getLogger(__name__)


def infer_slides(cfg: DictConfig, module: pl.LightningModule, stretch: tuple[float, float] | None,
                 model_mpp: float | None) -> dict:
    """Each slide of `cfg.slides` into `<output_dir>/slides/<slide name>/`, read at `infer.mpp` (default
    `model_mpp`, the resolution the model trained at) and normalised with the training `stretch`."""
    slides = input_slides(cfg.slides)
    target_mpp = cfg.infer.mpp if cfg.infer.mpp is not None else model_mpp
    if target_mpp is None:
        log.warning("neither infer.mpp nor the run's data.mpp is set: slides are segmented at level 0")
    options = {k: v for k, v in cfg.infer.slide.items() if k not in ("backend", "mpp", "roi")}
    roi = cfg.infer.slide.get("roi")
    settings = SlideSettings(**options, roi=tuple(int(v) for v in roi) if roi is not None else None,
                             simplify=float(cfg.infer.geojson.simplify))

    def segment(rgb: np.ndarray):
        image, _ = prepare_image(rgb, 8, None, source="slide chunk")
        return module.predict_scored_instances(to_normalised_tensor(stretch_intensity(image, stretch)))

    summaries = {}
    for path in slides:
        reader = SlideReader(path, target_mpp=target_mpp, backend=cfg.infer.slide.backend, mpp=cfg.infer.slide.mpp)
        out = Path(cfg.paths.output_dir) / "slides" / path.stem
        try:
            summaries[path.stem] = SlideSegmentation(reader, segment, out, settings, path.stem,
                                                     recipe_id=str(Path(cfg.ckpt_path).resolve())).run()
        finally:
            reader.close()
        log.info("slide %s: %d nuclei, %d of %d chunks skipped as background -> %s", path.stem,
                 summaries[path.stem]["nuclei"], summaries[path.stem]["chunks_skipped"],
                 summaries[path.stem]["chunks"], out)
    return {"slides": len(slides), "nuclei": sum(s["nuclei"] for s in summaries.values())}


def input_slides(spec) -> list[Path]:
    """Slide paths of `slides=`: a path, a glob or a list of them; one error naming what matched nothing."""
    patterns = list(spec) if isinstance(spec, list | tuple | ListConfig) else [spec]
    found = []
    for pattern in map(str, patterns):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) \
            else [Path(pattern).expanduser()]
        files = [p for p in matches if p.is_file()]
        if not files:
            raise FileNotFoundError(f"slides={pattern}: no such slide file; expected a path or a glob of "
                                    f"whole-slide images ({', '.join(SLIDE_SUFFIXES)})")
        found.extend(files)
    stems = [p.stem for p in found]
    duplicated = sorted({s for s in stems if stems.count(s) > 1})
    if duplicated:
        raise ConfigError(f"slides=: several slides are named {duplicated}; their output folders would collide")
    return found
