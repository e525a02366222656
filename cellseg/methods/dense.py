"""Base LightningModule of the dense methods (supervised, S2L, COIN): tiled inference, instances, metrics."""

from __future__ import annotations

import inspect
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from cellseg.data.transforms import denormalise
from cellseg.inference.tiler import check_tiling, predict_tiled
from cellseg.metrics import InstanceSegMetrics
from cellseg.utils.io import write_image
from cellseg.utils.overlay import overlay_instances, side_by_side

log = logging.getLogger(__name__)

SELECTION_KEYS_FORBIDDEN = ("oracle/", "test/")


class DenseSegmentationModule(pl.LightningModule):
    """Shared inference path: probabilities by tiles, instances by the method's post-processing, metrics.

    `metric_prefix` is `val` when validation ground truth is part of the regime (full supervision) and `oracle`
    in weak regimes, where those numbers are for looking only and never select a checkpoint.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        scheduler=None,
        inference: dict | None = None,
        metric_prefix: str = "val",
        log_images: int = 2,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.inference = {"tile": 512, "overlap": 64, "hflip": False, "batch_size": 2, **(inference or {})}
        check_tiling(int(self.inference["tile"]), int(self.inference["overlap"]), int(self.inference["batch_size"]),
                     key="method.module.inference.")
        self.metric_prefix, self.log_images = metric_prefix, log_images
        self.val_metrics = InstanceSegMetrics(per_image=True)

    # ----- to be provided by each method -------------------------------------------------------------------------
    def probabilities_to_instances(self, probs: np.ndarray) -> np.ndarray:
        """(K, H, W) probabilities -> int32 instance map; every method defines its own decoding."""
        raise NotImplementedError(f"{type(self).__name__} must define probabilities_to_instances")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    # ----- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_probabilities(self, image: torch.Tensor) -> np.ndarray:
        """Softmax probabilities (K, H, W) of one normalised image (3, H, W), by overlapping tiles."""
        cfg = self.inference
        probs = predict_tiled(
            lambda batch: self(batch).softmax(dim=1),
            image.to(self.device),
            tile=cfg["tile"],
            overlap=cfg["overlap"],
            batch_size=cfg["batch_size"],
            hflip=cfg["hflip"],
        )
        return probs.cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)

    def predict_instances(self, image: torch.Tensor) -> np.ndarray:
        return self.probabilities_to_instances(self.predict_probabilities(image))

    # ----- validation --------------------------------------------------------------------------------------------
    uses_val_targets = False  # True: validation batches also carry the regime's weak "target" (see S2L)

    def validate_probabilities(self, probs: np.ndarray, batch: dict, k: int) -> None:
        """Extra validation terms of one image from its probabilities (none by default)."""

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for k, image in enumerate(batch["image"]):
            probs = self.predict_probabilities(image)
            self.validate_probabilities(probs, batch, k)
            pred = self.probabilities_to_instances(probs)
            gt = batch["label"][k].cpu().numpy()
            self.val_metrics.update([pred], [gt], [int(batch["index"][k])])
            if batch_idx * len(batch["image"]) + k < self.log_images:
                self._log_overlay(batch["id"][k], image, pred, gt)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        for name in ("aji", "pq", "dice", "aji_pooled", "pq_pooled", "dice_pooled"):
            if name in values:
                # already reduced over ranks by the metric; sync_dist only silences Lightning's DDP warning
                self.log(f"{self.metric_prefix}/{name}", float(values[name]), prog_bar=name in ("aji", "pq"), sync_dist=True)

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
