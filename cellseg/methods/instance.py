"""Base LightningModule of every method: images in, instance maps out; validation, test and prediction on top."""

from __future__ import annotations

import inspect
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from cellseg.data.transforms import denormalise
from cellseg.inference.stitching import CUT_MODES, predict_tiled_instances
from cellseg.inference.tiler import check_tiling
from cellseg.metrics import InstanceSegMetrics
from cellseg.utils.io import write_image
from cellseg.utils.overlay import overlay_instances, side_by_side

log = logging.getLogger(__name__)

METRIC_NAMES = ("aji", "pq", "dice", "aji_pooled", "pq_pooled", "dice_pooled")


class InstanceSegmentationModule(pl.LightningModule):
    """The contract every method's module satisfies: one image in, one instance map out.

    Input and output of `predict_instances(image)` (what validation, test, `predict_step` and `infer.py` call):

    - image: float tensor (3, H, W) of one whole image of any size, normalised like
      `cellseg.data.transforms.to_normalised_tensor` (RGB in [0, 1], ImageNet mean and std), on any device (the
      module moves it to its own).
    - returns: integer numpy array (H, W) (int32, or uint16), 0 background and one positive label per instance;
      instances do not overlap, labels need not be consecutive.

    A subclass provides either `predict_instances` itself (decorated with `torch.no_grad()`), or
    `predict_tile_instances(tiles)`: a (B, 3, h, w) batch of tiles -> B integer instance maps (h, w) (a list or a
    (B, h, w) array/tensor), and the base runs it over overlapping tiles and stitches the instances
    (`cellseg.inference.stitching.predict_tiled_instances`: each instance kept once, from the tile owning the centre
    of its bounding box; exact when `overlap` exceeds the largest instance extent). `inference` configures that
    path: `tile`, `overlap`, `batch_size`, `cut` ("keep" | "drop" | "raise": instances cut by the tile that owns
    them). Dense methods (`DenseSegmentationModule`) replace it by tiled probabilities and post-processing.

    Batches (whole images, `collate_whole_images`): a dict with "image" (B, 3, H, W) tensor or list of (3, H_i, W_i),
    "id" list of str, "index" int per image; validation and test batches also hold "label", the ground-truth
    instance maps (B, H, W) or a list of (H_i, W_i).

    - `validation_step`: per-image `InstanceSegMetrics` of `validation_instances(image, batch, k)` (by default
      `predict_instances(image)`) against "label", logged at epoch end as `<metric_prefix>/aji`, `/pq`, `/dice`
      and their `_pooled` forms; the first `log_images` images also get an overlay (predicted outlines red,
      ground truth green) in every logger that takes images and in `<default_root_dir>/overlays/step<N>/`.
      `metric_prefix` is `val` when validation ground truth is part of the regime (full supervision) and `oracle`
      in weak regimes, where those numbers are for looking only and never select a checkpoint.
    - `test_step`: the same through `predict_instances`, logged as `test/...` (never a selection key).
    - `predict_step`: a list with one dict per image, {"id": str, "index": int, "instances": (H, W) map}, what
      `cellseg.inference.prediction_writer.InstanceMapWriter` writes.
    - `configure_optimizers`: `optimizer(params=self.parameter_groups())` (every trainable parameter unless a
      subclass groups them), and `scheduler(optimizer)` stepped per step; a schedule missing `total_steps` gets
      the trainer's estimated number of steps.
    """

    inference_defaults: dict = {"tile": 512, "overlap": 64, "batch_size": 2, "cut": "keep"}
    uses_val_targets = False  # True: validation batches also carry the regime's weak "target" (see S2L)

    def __init__(
        self,
        net: torch.nn.Module | None = None,
        optimizer=None,
        scheduler=None,
        inference: dict | None = None,
        metric_prefix: str = "val",
        log_images: int = 2,
    ) -> None:
        super().__init__()
        if net is not None:
            self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.inference = {**self.inference_defaults, **(inference or {})}
        check_tiling(int(self.inference["tile"]), int(self.inference["overlap"]), int(self.inference["batch_size"]),
                     key="method.module.inference.")
        if "cut" in self.inference and self.inference["cut"] not in CUT_MODES:
            raise ValueError(f"method.module.inference.cut={self.inference['cut']!r}; expected one of {CUT_MODES}")
        self.metric_prefix, self.log_images = metric_prefix, log_images
        self.val_metrics = InstanceSegMetrics(per_image=True)
        self.test_metrics = InstanceSegMetrics(per_image=True)

    # ----- inference: the contract ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict_instances(self, image: torch.Tensor) -> np.ndarray:
        """(3, H, W) normalised image -> (H, W) integer instance map; by default tiles stitched by instances."""
        cfg = self.inference
        return predict_tiled_instances(
            self.predict_tile_instances, image.to(self.device), tile=int(cfg["tile"]), overlap=int(cfg["overlap"]),
            batch_size=int(cfg["batch_size"]), cut=cfg.get("cut", "keep"),
        )

    def predict_scored_instances(self, image: torch.Tensor) -> tuple[np.ndarray, dict[int, float] | None]:
        """(instance map, {instance id: confidence}) for outputs that carry scores (GeoJSON, CSV); None when the
        method has no per-instance confidence (a detector overrides this)."""
        return self.predict_instances(image), None

    def predict_tile_instances(self, tiles: torch.Tensor):
        """(B, 3, h, w) tiles -> B integer instance maps (h, w); for methods that predict instances directly."""
        raise NotImplementedError(
            f"{type(self).__name__} must define predict_instances (whole images) or predict_tile_instances "
            "(tiles, stitched by InstanceSegmentationModule)"
        )

    # ----- validation and test -----------------------------------------------------------------------------
    def validation_instances(self, image: torch.Tensor, batch: dict, k: int) -> np.ndarray:
        """Instance map of image `k` of a validation batch (a hook for extra validation terms, see dense)."""
        return self.predict_instances(image)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for k, image in enumerate(batch["image"]):
            pred = self.validation_instances(image, batch, k)
            gt = batch["label"][k].cpu().numpy()
            self.val_metrics.update([pred], [gt], [int(batch["index"][k])])
            if batch_idx * len(batch["image"]) + k < self.log_images:
                self._log_overlay(batch["id"][k], image, pred, gt)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, self.metric_prefix)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        for k, image in enumerate(batch["image"]):
            pred = self.predict_instances(image)
            self.test_metrics.update([pred], [batch["label"][k].cpu().numpy()], [int(batch["index"][k])])

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def _log_metrics(self, metrics: InstanceSegMetrics, prefix: str) -> None:
        values = metrics.compute()
        metrics.reset()
        for name in METRIC_NAMES:
            if name in values:
                # already reduced over ranks by the metric; sync_dist only silences Lightning's DDP warning
                self.log(f"{prefix}/{name}", float(values[name]), prog_bar=name in ("aji", "pq"), sync_dist=True)

    def _log_overlay(self, image_id: str, image: torch.Tensor, pred: np.ndarray, gt: np.ndarray) -> None:
        picture = side_by_side(denormalise(image), overlay_instances(denormalise(image), pred, gt))
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"{self.metric_prefix}/overlay/{image_id}", images=[picture], step=self.global_step)
        if self.trainer.is_global_zero and self.trainer.default_root_dir:
            folder = Path(self.trainer.default_root_dir) / "overlays" / f"step{self.global_step:06d}"
            write_image(folder / f"{image_id}.png", picture)

    # ----- prediction --------------------------------------------------------------------------------------------
    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return [
            {"id": image_id, "index": int(batch["index"][k]), "instances": self.predict_instances(batch["image"][k])}
            for k, image_id in enumerate(batch["id"])
        ]

    # ----- optimisation --------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict] | list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} was built without an optimizer (module.optimizer)")
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        factory = self.scheduler_factory
        if isinstance(factory, partial) and "total_steps" in _keywords_of(factory):
            factory = partial(factory, total_steps=int(self.trainer.estimated_stepping_batches))
        scheduler = factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _keywords_of(factory: partial) -> set[str]:
    """Parameters of a partial still to be given (the schedule length is filled in only when it is missing)."""
    return set(inspect.signature(factory.func).parameters) - set(factory.keywords)
