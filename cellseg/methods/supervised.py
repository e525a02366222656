"""Fully supervised upper bound: every training pixel labelled, CE + Dice, optional boundary class."""

from __future__ import annotations

import numpy as np
import torch

from cellseg.methods.dense import DenseSegmentationModule
from cellseg.methods.losses import CEDiceLoss
from cellseg.postproc.instances import semantic_to_instance
from cellseg.postproc.three_class import decode_three_class, three_class_targets
from cellseg.utils.ignore import IGNORE_CLASS


class SupervisedSegmentation(DenseSegmentationModule):
    """Semantic targets from the full instance labels: background/nucleus, or background/inside/boundary.

    The boundary class separates touching nuclei; its decoding seeds one watershed marker per nucleus interior.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        scheduler=None,
        num_classes: int = 3,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        postproc: dict | None = None,
        inference: dict | None = None,
        log_images: int = 2,
    ) -> None:
        super().__init__(net, optimizer, scheduler, inference, metric_prefix="val", log_images=log_images)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if num_classes not in (2, 3):
            raise ValueError(f"method.module.num_classes={num_classes}; expected 2 (bg/nucleus) or 3 (bg/inside/boundary)")
        self.boundary_class = num_classes == 3
        self.ignore_index = IGNORE_CLASS
        self.loss = CEDiceLoss(IGNORE_CLASS, ce_weight, dice_weight)
        self.postproc = dict(postproc or {})

    def train_target(self, raw: np.ndarray | None, kind: str, shape: tuple[int, int]) -> np.ndarray:
        """Instance map -> class map (uint8), computed once per whole training image."""
        if raw is None or kind != "instance":
            raise ValueError(f"method=supervised needs full instance labels; got target format '{kind}'")
        if self.boundary_class:
            return three_class_targets(raw).astype(np.uint8)
        return (raw > 0).astype(np.uint8)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        terms = self.loss(logits, batch["target"])
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True, batch_size=len(batch["image"]))
        return terms["loss"]

    def probabilities_to_instances(self, probs: np.ndarray) -> np.ndarray:
        if self.boundary_class:
            return decode_three_class(probs, **self.postproc)
        return semantic_to_instance(probs[1] > 0.5, **self.postproc)
