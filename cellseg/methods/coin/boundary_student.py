"""COIN student with a boundary class: the supervised baseline's target and decoding, trained on pseudo labels.

The reference student (`CoinSelfDistillation`) learns nucleus vs background and splits touching nuclei afterwards
with a distance watershed (A4). This student learns three classes from the same pseudo label P, so it is taught
where neighbouring nuclei part:
- 0 background (P = 0), 1 inside, 2 boundary (the inner 4-neighbour contour of every accepted instance, the
  pixels `edge_targets` marks), 255 ignore (P = 65535: instances the prompter did not confirm);
- loss: CE + soft Dice over the three classes (`CEDiceLoss`), on full-resolution logits of a plain network
  (e.g. `model=unet_small` with `method.module.num_classes=3`);
- instances (`split`): `boundary_markers` = `decode_three_class` (markers from the insides, watershed over inside +
  boundary), as the supervised U-Net decodes; `distance_watershed` = the reference student's A4 watershed
  (`instances`) of the foreground (inside + boundary), which splits touching nuclei by their shape. COIN's pseudo
  labels accept few touching nuclei (clusters disagree with the prompter and become ignore), so the student sees
  few boundaries between neighbours and `boundary_markers` merges clusters it was never shown parted.
Random rescaling, the SGD/AdamW parameter groups, tiling and test-time scales are the reference student's.
"""

from __future__ import annotations

import numpy as np
import torch

from cellseg.methods.coin.module import CoinSelfDistillation, edge_targets, seg_targets
from cellseg.methods.losses import CEDiceLoss
from cellseg.postproc.three_class import BOUNDARY, INSIDE, decode_three_class
from cellseg.utils.ignore import IGNORE_CLASS

SPLITS = ("boundary_markers", "distance_watershed")


def boundary_targets(labels: torch.Tensor) -> torch.Tensor:
    """Pseudo-label instance ids (B, H, W) -> 0 background, 1 inside, 2 boundary, 255 ignore (int64)."""
    target = seg_targets(labels)
    target[edge_targets(labels) == 1] = BOUNDARY
    return target


class CoinBoundaryStudent(CoinSelfDistillation):
    """Three-class student (background / inside / boundary) of a network returning (B, 3, H, W) logits.

    `split`: how instances are cut from the probabilities (`boundary_markers` | `distance_watershed`, see the module
    docstring). `postproc`: keywords of `decode_three_class` (its `fill_holes` is `inference.fill_holes`), used by
    `boundary_markers`. `instances`: the A4 keywords, used by `distance_watershed` and, whatever the split, by the
    pipeline for round 0 (A4 of the UCIS mask). DenseCRF inference is refused: it is defined for the two-class maps
    of the reference student.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        scheduler=None,
        num_classes: int = 3,
        lr: float = 1.0e-3,
        backbone_lr_mult: float | str = "auto",
        edge_loss: bool = False,
        rescale: tuple[float, float] | None = (0.5, 2.0),
        instances: dict | None = None,
        split: str = "boundary_markers",
        postproc: dict | None = None,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        inference: dict | None = None,
        log_images: int = 0,
    ) -> None:
        if num_classes != 3:
            raise ValueError(f"method.module.num_classes={num_classes}; CoinBoundaryStudent predicts 3 classes "
                             "(background, inside, boundary)")
        if edge_loss:
            raise ValueError("method.module.edge_loss=true needs the reference student's edge head; "
                             "CoinBoundaryStudent learns boundaries as its third class (set edge_loss: false)")
        super().__init__(net, optimizer, scheduler, lr=lr, backbone_lr_mult=backbone_lr_mult, edge_loss=False,
                         rescale=rescale, instances=instances, inference=inference, log_images=log_images)
        if self.crf_options is not None:
            raise ValueError("method.module.inference.crf.enabled=true is not supported by CoinBoundaryStudent "
                             "(three-class maps); set it to false")
        if split not in SPLITS:
            raise ValueError(f"method.module.split={split!r}; expected one of {SPLITS}")
        self.split = split
        self.postproc = dict(postproc or {})
        if "fill_holes" in self.postproc:
            raise ValueError("method.module.postproc.fill_holes: set method.module.inference.fill_holes instead")
        self.loss = CEDiceLoss(IGNORE_CLASS, ce_weight, dice_weight)

    def compute_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if outputs.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f"CoinBoundaryStudent needs logits at the input size {tuple(labels.shape[-2:])}, got "
                             f"{tuple(outputs.shape[-2:])}: use a network with full-resolution output (model=unet_small)")
        return self.loss(outputs, boundary_targets(labels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def probabilities_to_instances(self, probs: np.ndarray, image_rgb: np.ndarray | None = None) -> np.ndarray:
        if self.split == "boundary_markers":
            return decode_three_class(probs, fill_holes=bool(self.inference["fill_holes"]), **self.postproc)
        return self.mask_to_instances(probs[INSIDE] + probs[BOUNDARY] > 0.5)
