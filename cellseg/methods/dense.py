"""Dense methods (supervised, S2L, COIN) on the instance base: tiled probabilities, test-time augmentation, decoding.

`InstanceSegmentationModule` owns validation, test, prediction, metrics and optimisation; a dense method adds a
network with per-pixel class logits (`forward`), probabilities by overlapping tiles averaged over the
`inference.scales` and, with `inference.hflip`, horizontal flips (`predict_probabilities`), and its own decoding of
probabilities into instances (`probabilities_to_instances`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cellseg.inference.tiler import check_scales, predict_tiled_multiscale
from cellseg.methods.instance import InstanceSegmentationModule

__all__ = ["DenseSegmentationModule"]


class DenseSegmentationModule(InstanceSegmentationModule):
    """Probabilities by tiles (+ multi-scale/flip averaging), instances by the method's post-processing.

    `inference`: `tile`, `overlap`, `batch_size` of the tiles (`cellseg.inference.tiler.predict_tiled`), `hflip`
    (average with the mirrored prediction) and `scales` (resize factors whose probabilities, resized back, are
    averaged; default [1.0], the image as it is). `metric_prefix`: see `InstanceSegmentationModule`.
    """

    inference_defaults: dict = {"tile": 512, "overlap": 64, "hflip": False, "batch_size": 2, "scales": [1.0]}

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        scheduler=None,
        inference: dict | None = None,
        metric_prefix: str = "val",
        log_images: int = 2,
    ) -> None:
        super().__init__(net, optimizer, scheduler, inference, metric_prefix=metric_prefix, log_images=log_images)
        check_scales(self.inference["scales"], key="method.module.inference.scales")

    # ----- to be provided by each method -------------------------------------------------------------------------
    def probabilities_to_instances(self, probs: np.ndarray) -> np.ndarray:
        """(K, H, W) probabilities -> int32 instance map; every method defines its own decoding."""
        raise NotImplementedError(f"{type(self).__name__} must define probabilities_to_instances")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    # ----- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_probabilities(
        self, image: torch.Tensor, scales: Sequence[float] | None = None, hflip: bool | None = None
    ) -> np.ndarray:
        """Softmax probabilities (K, H, W) of one normalised image (3, H, W), by overlapping tiles, averaged over
        `scales` (default `inference.scales`) with `hflip` (default `inference.hflip`)."""
        cfg = self.inference
        return predict_tiled_multiscale(
            lambda batch: self(batch).softmax(dim=1),
            image.to(self.device),
            scales=cfg["scales"] if scales is None else scales,
            tile=cfg["tile"],
            overlap=cfg["overlap"],
            batch_size=cfg["batch_size"],
            hflip=cfg["hflip"] if hflip is None else hflip,
        )

    def predict_instances(self, image: torch.Tensor) -> np.ndarray:
        return self.probabilities_to_instances(self.predict_probabilities(image))

    # ----- validation --------------------------------------------------------------------------------------------
    def validate_probabilities(self, probs: np.ndarray, batch: dict, k: int) -> None:
        """Extra validation terms of one image from its probabilities (none by default)."""

    def validation_instances(self, image: torch.Tensor, batch: dict, k: int) -> np.ndarray:
        """Probabilities once: `validate_probabilities` sees them, then they are decoded into instances."""
        probs = self.predict_probabilities(image)
        self.validate_probabilities(probs, batch, k)
        return self.probabilities_to_instances(probs)
