"""Cyclic's front end as a LightningModule: the tile classifier trained on image-level labels (cross-entropy)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cellseg.models.cyclic_networks import CyclicNetworks


class TileClassification(pl.LightningModule):
    """`net.classifier` of a `CyclicNetworks` on batches {"image": (B, 3, s, s), "label": (B,) 0/1}; the detector
    half is carried, never trained here. Logs `train/tile_loss`, `train/tile_accuracy` and, on held-out tiles
    (image-level labels, the regime's own supervision), `val/tile_loss` and `val/tile_accuracy`."""

    def __init__(self, net: CyclicNetworks, optimizer=None, scheduler=None) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        net.train_only("classifier")

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.detector.eval()
        return self

    def step(self, batch: dict, prefix: str) -> torch.Tensor:
        logits = self.net.classifier(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        accuracy = (logits.argmax(1) == batch["label"]).float().mean()
        on_step = prefix == "train"
        size = len(batch["label"])
        self.log(f"{prefix}/tile_loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, batch_size=size)
        self.log(f"{prefix}/tile_accuracy", accuracy, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=size)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.step(batch, "val")

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("TileClassification was built without an optimizer (method.classifier.optimizer)")
        optimizer = self.optimizer_factory(params=[p for p in self.net.classifier.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
