"""Cyclic's back end as a LightningModule: torchvision Mask R-CNN trained on pseudo instances with ignore regions.

Scale: the detector works on images enlarged by `scale` (the reference's x2, which makes small nuclei reach its
smallest anchors); batches and tiles arrive at native resolution and are resized here, outputs come back at native
resolution. Inference follows the framework's contract (`InstanceSegmentationModule`): native tiles of
`inference.tile` px, detections painted in descending score order, instances stitched across tiles; the
detections' scores travel along (`predict_scored_instances`) for self-training and GeoJSON outputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cellseg.inference.stitching import predict_tiled_instances
from cellseg.methods.cyclic.targets import detection_target, instance_target
from cellseg.methods.instance import InstanceSegmentationModule
from cellseg.models.cyclic_networks import CyclicNetworks
from cellseg.models.mask_rcnn import detections_to_instances
from cellseg.utils.ignore import IGNORE_INSTANCE


class CyclicDetector(InstanceSegmentationModule):
    """Mask R-CNN of `net.detector` (a `CyclicNetworks`); the classifier half is carried, never trained here.

    Training batches: {"image": (B, 3, h, w) normalised crops, "target": (B, h, w) int64 pseudo-instance maps,
    `IGNORE_INSTANCE` ignore}; the loss is the sum of torchvision's five losses, each also logged.
    """

    inference_defaults: dict = {"tile": 384, "overlap": 64, "batch_size": 1, "cut": "keep"}
    ignore_index = IGNORE_INSTANCE
    train_target = staticmethod(instance_target)

    def __init__(self, net: CyclicNetworks, scale: float = 2.0, min_instance_area: int = 4,
                 mask_threshold: float = 0.5, min_score: float = 0.0, optimizer=None, scheduler=None,
                 inference: dict | None = None, metric_prefix: str = "oracle", log_images: int = 0) -> None:
        super().__init__(net=net, optimizer=optimizer, scheduler=scheduler, inference=inference,
                         metric_prefix=metric_prefix, log_images=log_images)
        if scale <= 0 or not 0 < mask_threshold < 1 or min_instance_area < 1:
            raise ValueError(f"method.module: scale={scale} (> 0), mask_threshold={mask_threshold} (in (0, 1)), "
                             f"min_instance_area={min_instance_area} (>= 1) expected")
        self.scale, self.min_instance_area = float(scale), int(min_instance_area)
        self.mask_threshold = float(mask_threshold)
        net.train_only("detector")
        self.set_min_score(min_score)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])

    def set_min_score(self, min_score: float) -> None:
        """Keep detections scoring >= `min_score`; lower boxes never reach the mask head (pasting hundreds of
        masks per tile dominates CPU inference)."""
        self.min_score = float(min_score)
        self.net.detector.roi_heads.score_thresh = self.min_score

    # ----- training ------------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.net.classifier.eval()  # not trained here: its BatchNorm statistics stay those it was trained with
        return self

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = self.enlarge(batch["image"]), self.enlarge_labels(batch["target"])
        targets = [detection_target(label, self.min_instance_area) for label in labels]
        losses = self.net.detector(list(images), targets)
        loss = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=True, batch_size=len(images))
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=len(images))
        return loss

    def enlarge(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return images
        return F.interpolate(images, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def enlarge_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return labels
        return F.interpolate(labels[:, None].float(), scale_factor=self.scale, mode="nearest")[:, 0].long()

    def parameter_groups(self) -> list[torch.nn.Parameter]:
        return [p for p in self.net.detector.parameters() if p.requires_grad]

    # ----- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, tiles: torch.Tensor) -> list[dict]:
        """(B, 3, h, w) native tiles -> B torchvision outputs at native resolution (boxes, scores, masks as
        (N, 1, h, w) probabilities)."""
        was_training = self.net.detector.training
        self.net.detector.eval()
        outputs = self.net.detector(list(self.enlarge(tiles)))
        self.net.detector.train(was_training)
        size = tiles.shape[-2:]
        for out in outputs:
            out["boxes"] = out["boxes"] / self.scale
            if not len(out["masks"]):  # torchvision's empty output has no channel axis
                out["masks"] = out["masks"].new_zeros((0, 1, *size))
            elif out["masks"].shape[-2:] != size:
                out["masks"] = F.interpolate(out["masks"], size=size, mode="bilinear", align_corners=False)
        return outputs

    def scored_tile_instances(self, tiles: torch.Tensor) -> tuple[list[np.ndarray], list[dict[int, float]]]:
        """Instance maps of tiles (ids 1..N in descending score) and {id: score} per tile."""
        maps, scores = [], []
        for out in self.detect(tiles):
            instances, values = detections_to_instances(out, tuple(tiles.shape[-2:]), self.mask_threshold,
                                                        self.min_score, return_scores=True)
            maps.append(instances)
            scores.append({i: float(v) for i, v in enumerate(values, start=1)})
        return maps, scores

    def predict_tile_instances(self, tiles: torch.Tensor) -> list[np.ndarray]:
        return self.scored_tile_instances(tiles)[0]

    @torch.no_grad()
    def predict_scored_instances(self, image: torch.Tensor) -> tuple[np.ndarray, dict[int, float]]:
        """(3, H, W) normalised image -> (instance map, {instance id: detection score})."""
        cfg = self.inference
        return predict_tiled_instances(
            self.scored_tile_instances, image.to(self.device), tile=int(cfg["tile"]), overlap=int(cfg["overlap"]),
            batch_size=int(cfg["batch_size"]), cut=cfg.get("cut", "keep"), with_scores=True,
        )

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        results = []
        for k, image_id in enumerate(batch["id"]):
            instances, scores = self.predict_scored_instances(batch["image"][k])
            results.append({"id": image_id, "index": int(batch["index"][k]), "instances": instances,
                            "scores": scores})
        return results
