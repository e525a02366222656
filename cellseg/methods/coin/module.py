"""COIN stage 3 (docs/methods/coin.md#self-distillation): self-distillation of a DeepLabV3+ (CoinDeepLab) on the pseudo labels P.

Targets come from P (uint16 file: 0 background, 1..K confident instances, 65535 ignore), cropped and augmented
by the DataModule as one instance map, so edge targets are taken after augmentation as in the reference:
- segmentation: P > 0 -> 1, background 0, ignore 255; nearest-downsampled to the 1/4 logit grid;
- edge: the contour pixels of every instance (4-neighbour inner boundary), ignore 255.
Loss: CE + foreground Dice on each head (equal weights, ignore 255). Inference (A7): multi-scale (+ flip) softmax
averaged at the image size, per-channel min-max, optional DenseCRF, argmax, hole filling, A4 watershed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from cellseg.data.transforms import denormalise
from cellseg.methods.coin.prototypes import minmax_per_channel
from cellseg.methods.coin.refine import crf_refine
from cellseg.methods.dense import DenseSegmentationModule
from cellseg.methods.losses import cross_entropy_or_zero, foreground_dice_loss
from cellseg.models.deeplab_coin import param_groups
from cellseg.postproc.instances import binary_to_instances
from cellseg.utils.ignore import IGNORE_CLASS as SEG_IGNORE
from cellseg.utils.ignore import IGNORE_INSTANCE as PSEUDO_IGNORE

SIZE_MULTIPLE = 32  # rescaled training crops stay valid encoder inputs
INSTANCE_KEYS = ("denoise", "dist_sigma", "footprint_radius", "connectivity")  # of binary_to_instances


def seg_targets(labels: torch.Tensor) -> torch.Tensor:
    """Pseudo-label instance ids (B, H, W) -> 0 background, 1 nucleus, 255 ignore (int64)."""
    target = (labels > 0).long()
    target[labels == PSEUDO_IGNORE] = SEG_IGNORE
    return target


def edge_targets(labels: torch.Tensor) -> torch.Tensor:
    """1 on instance pixels with a 4-neighbour of another label (their contour), 0 elsewhere, 255 on ignore.

    Stands in for the reference's union of Canny(instance mask): on a binary mask Canny marks the contour; this
    marks the inner contour of each instance exactly, including lines between touching instances.
    """
    padded = F.pad(labels[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    centre = padded[:, 1:-1, 1:-1]
    differs = torch.zeros_like(labels, dtype=torch.bool)
    for rows, cols in ((slice(0, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
                       (slice(1, -1), slice(0, -2)), (slice(1, -1), slice(2, None))):
        differs |= padded[:, rows, cols] != centre
    instance = (labels > 0) & (labels != PSEUDO_IGNORE)
    target = (instance & differs).long()
    target[labels == PSEUDO_IGNORE] = SEG_IGNORE
    return target


def downsample_nearest(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer (B, H, W) map (exact for ids up to 2^24)."""
    return F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


class CoinSelfDistillation(DenseSegmentationModule):
    """CoinDeepLab trained on pseudo labels; SGD parameter groups (heads at `lr`, encoder at lr x mult).

    `inference` is the one node of A7: the tiling of `DenseSegmentationModule` (`tile`, `overlap`, `batch_size`),
    the averaged `scales` (each with a horizontal flip when `hflip`), `crf` (`enabled` and the keywords of
    `crf_refine`) and `fill_holes`. `instances`: keywords of `binary_to_instances` (A4).
    """

    inference_defaults: dict = {**DenseSegmentationModule.inference_defaults, "fill_holes": True,
                                "crf": {"enabled": False}}

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        scheduler=None,
        lr: float = 1.0e-2,
        backbone_lr_mult: float | str = "auto",
        edge_loss: bool = True,
        rescale: tuple[float, float] | None = (0.5, 2.0),
        instances: dict | None = None,
        inference: dict | None = None,
        log_images: int = 0,
    ) -> None:
        super().__init__(net, optimizer, scheduler, inference, metric_prefix="oracle", log_images=log_images)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if rescale is not None and (len(rescale) != 2 or not 0 < rescale[0] <= rescale[1]):
            raise ValueError(f"method.module.rescale={rescale}; expected [low, high] with 0 < low <= high, or null")
        if backbone_lr_mult != "auto" and not isinstance(backbone_lr_mult, (int, float)):
            raise ValueError(f"method.module.backbone_lr_mult={backbone_lr_mult!r}; expected a number or auto")
        self.lr, self.backbone_lr_mult = float(lr), backbone_lr_mult
        self.edge_loss = bool(edge_loss) and getattr(net, "edge_head", None) is not None
        self.rescale = tuple(rescale) if rescale is not None else None
        self.instance_options = dict(instances or {})
        unknown = sorted(set(self.instance_options) - set(INSTANCE_KEYS))
        if unknown:
            raise ValueError(f"method.module.instances has {unknown}; expected keys among {INSTANCE_KEYS}")
        crf = dict(self.inference["crf"])
        if not isinstance(crf.get("enabled"), bool):  # a check of the node, not a default
            raise ValueError(f"method.module.inference.crf={crf}; expected enabled: true | false (and the "
                             "keywords of crf_refine)")
        self.crf_options = {k: v for k, v in crf.items() if k != "enabled"} if crf["enabled"] else None
        self.ignore_index = PSEUDO_IGNORE  # what the DataModule pads target crops with

    # ----- targets -------------------------------------------------------------------------------------------
    def train_target(self, raw: np.ndarray | None, kind: str, shape: tuple[int, int]) -> np.ndarray:
        """The pseudo label P as written by the pipeline (int32: 0 bg, 1..K instances, 65535 ignore)."""
        if raw is None or kind != "instance":
            raise ValueError("method=coin trains on the pseudo labels of its pipeline (uint16 instance maps), "
                             f"got target format '{kind}'; run it through method.runner (cellseg.methods.coin)")
        return raw.astype(np.int32)

    # ----- training ------------------------------------------------------------------------------------------
    def random_rescale(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One scale s ~ U[low, high] per batch: bicubic images, nearest labels; larger results are randomly
        cropped back to the input size (the reference rescales the image, then crops)."""
        if self.rescale is None or self.rescale[0] == self.rescale[1] == 1.0:
            return images, labels
        low, high = self.rescale
        scale = low + (high - low) * float(torch.rand(()))
        height, width = images.shape[-2:]
        size = [max(SIZE_MULTIPLE, int(round(n * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE) for n in (height, width)]
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False)
        labels = downsample_nearest(labels, size)
        top = int(torch.randint(0, max(1, size[0] - height + 1), ()))
        left = int(torch.randint(0, max(1, size[1] - width + 1), ()))
        rows, cols = slice(top, top + min(height, size[0])), slice(left, left + min(width, size[1]))
        return images[..., rows, cols], labels[:, rows, cols]

    def compute_loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        seg = downsample_nearest(seg_targets(labels), outputs["seg"].shape[-2:])
        terms = {
            "seg_ce": cross_entropy_or_zero(outputs["seg"], seg, SEG_IGNORE),
            "seg_dice": foreground_dice_loss(outputs["seg"], seg),
        }
        if self.edge_loss and "edge" in outputs:
            edge = downsample_nearest(edge_targets(labels), outputs["edge"].shape[-2:])
            terms["edge_ce"] = cross_entropy_or_zero(outputs["edge"], edge, SEG_IGNORE)
            terms["edge_dice"] = foreground_dice_loss(outputs["edge"], edge)
        terms["loss"] = sum(terms.values())
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = self.random_rescale(batch["image"], batch["target"])
        terms = self.compute_loss(self.net(images), labels)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True, batch_size=len(images))
        return terms["loss"]

    def parameter_groups(self) -> list[dict]:
        return param_groups(self.net, self.lr, self.backbone_lr_mult)

    # ----- inference (A7) ------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Segmentation logits bilinearly upsampled to the input size (what tiled inference expects)."""
        logits = self.net(images)["seg"]
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def predict_instances(self, image: torch.Tensor) -> np.ndarray:
        rgb = denormalise(image) if self.crf_options is not None else None
        return self.probabilities_to_instances(self.predict_probabilities(image), rgb)

    def probabilities_to_instances(self, probs: np.ndarray, image_rgb: np.ndarray | None = None) -> np.ndarray:
        """Per-channel min-max, optional CRF on the RGB image, argmax, hole filling, A4 watershed."""
        maps = minmax_per_channel(np.asarray(probs, dtype=np.float64))
        if self.crf_options is not None:
            if image_rgb is None:
                raise ValueError("method.module.inference.crf.enabled=true needs the RGB image")
            maps = crf_refine(image_rgb, maps, **self.crf_options)
        return self.mask_to_instances(np.argmax(maps, axis=0) == 1)

    def mask_to_instances(self, mask: np.ndarray) -> np.ndarray:
        """Nucleus mask -> instances: hole filling (`inference.fill_holes`), then the A4 watershed (`instances`)."""
        if self.inference["fill_holes"]:
            mask = ndi.binary_fill_holes(mask)
        return binary_to_instances(mask, **self.instance_options)
