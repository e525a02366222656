"""Scribble2Label (Lee & Jeong, MICCAI 2020; docs/methods/s2l.md): scribble CE, then + λ·CE on pseudo labels from EMA maps.

Warm-up (epoch < E_w): L = L_sp, CE over scribbled pixels only. Afterwards L = L_sp + λ·L_up, L_up = CE over
unscribbled pixels against ŷ from the per-image EMA map Ȳ (1 if Ȳ > τ, 0 if Ȳ < 1 - τ, else ignored); each term
averages over its own valid pixels and an empty term contributes 0. Ȳ is updated after epoch e when
(e + 1) mod Q == 0 (cellseg/methods/s2l/ema_maps.py) and travels with every checkpoint. `pce_only` is the pCE
baseline (scribble loss alone, no EMA). Instances: p_fg > 0.5 decoded as the data config says (`data.instances`:
watershed for touching H&E nuclei, the reference's 8-connected components for sparse fluorescence).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image
from torchmetrics.aggregation import MeanMetric

from cellseg.callbacks import LastCheckpoint
from cellseg.data.transforms import CropGeometry
from cellseg.methods.dense import DenseSegmentationModule
from cellseg.methods.losses import cross_entropy_or_zero
from cellseg.methods.s2l.ema_maps import (
    CHECKPOINT_KEY,
    EmaMaps,
    broadcast_buffers,
    dtype_of,
    is_sidecar_reference,
    is_update_epoch,
    load_sidecar,
    prune_sidecars,
    pseudo_labels,
    save_sidecar,
    sidecar_path,
    update_ema_maps,
)
from cellseg.postproc.instances import INSTANCE_METHODS, semantic_to_instance
from cellseg.utils.ignore import IGNORE_CLASS

log = logging.getLogger(__name__)

EMA_STORES = ("checkpoint", "sidecar")
NET_PARTS = ("encoder", "decoder", "segmentation_head")


class Scribble2Label(DenseSegmentationModule):
    """S2L on an smp-style network (`encoder`, `decoder`, `segmentation_head`) with 2 output logits (bg, fg)."""

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        scheduler=None,
        ignore_index: int = IGNORE_CLASS,
        warmup_epochs: int = 100,
        ema_period: int = 5,
        tau: float = 0.8,
        alpha: float = 0.2,
        lam: float = 0.5,
        pce_only: bool = False,
        ema_dtype: str = "float16",
        ema_store: str = "checkpoint",
        ema_sidecar_dir: str | None = None,
        ema_prune_sidecars: bool = True,
        lr_encoder: float = 3.0e-4,
        lr_decoder: float = 3.0e-3,
        faithful_frozen_head: bool = False,
        faithful_crop32: bool = False,
        val_scribble_loss: bool = False,
        instances: str = "cc",
        min_instance_area: int = 64,
        fill_holes: bool = True,
        instance_kwargs: dict | None = None,
        inference: dict | None = None,
        log_images: int = 2,
    ) -> None:
        super().__init__(net, optimizer, scheduler, inference, metric_prefix="oracle", log_images=log_images)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        check_options(warmup_epochs, ema_period, tau, alpha, lam, ema_store, faithful_crop32, instances)
        if ema_store == "sidecar" and not ema_sidecar_dir:
            raise ValueError("method.module.ema_store=sidecar needs a folder for the map files (module.ema_sidecar_dir)")
        self.ema_store, self.ema_sidecar_dir = ema_store, ema_sidecar_dir
        self.ema_prune_sidecars = bool(ema_prune_sidecars)
        dtype_of(ema_dtype)  # fail now, not at the first checkpoint
        missing = [name for name in NET_PARTS if getattr(net, name, None) is None]
        if missing:
            raise ValueError(f"method=s2l needs a network with {NET_PARTS} (an smp model); {type(net).__name__} lacks {missing}")
        self.ignore_index = int(ignore_index)
        self.warmup_epochs, self.ema_period = int(warmup_epochs), int(ema_period)
        self.tau, self.alpha, self.lam = float(tau), float(alpha), float(lam)
        self.pce_only, self.ema_dtype = bool(pce_only), ema_dtype
        self.lr_encoder, self.lr_decoder = float(lr_encoder), float(lr_decoder)
        self.faithful_frozen_head = bool(faithful_frozen_head)
        self.instance_options = {"method": instances, "min_area": int(min_instance_area),
                                 "fill_holes": bool(fill_holes), **(instance_kwargs or {})}
        # L_sp on the validation images' scribbles (generated like the training ones): a GT-free selection key
        self.uses_val_targets = bool(val_scribble_loss)
        self.val_scribble = MeanMetric()
        self.ema: EmaMaps | None = None
        self._ema_source = None  # whole training images (normalised), set when fitting starts

    # ----- targets ---------------------------------------------------------------------------------------------
    def train_target(self, raw: np.ndarray | None, kind: str, shape: tuple[int, int]) -> np.ndarray:
        """A scribble map as written by ScribbleLabels: 0 bg, 1 fg, `ignore_index` unlabelled (uint8)."""
        if raw is None or kind != "scribble":
            raise ValueError(f"method=s2l trains on scribbles (supervision=scribble); got target format '{kind}'")
        unexpected = sorted(set(np.unique(raw).tolist()) - {0, 1, self.ignore_index})
        if unexpected:
            raise ValueError(
                f"scribble map holds values {unexpected[:5]}; expected 0 (bg), 1 (fg) and {self.ignore_index} "
                f"(unlabelled, supervision.ignore_index)"
            )
        return raw.astype(np.uint8)

    # ----- loss --------------------------------------------------------------------------------------------------
    def uses_pseudo_labels(self, epoch: int) -> bool:
        return not self.pce_only and epoch >= self.warmup_epochs

    def pseudo_targets(self, batch: dict) -> torch.Tensor:
        """ŷ of the batch's unscribbled pixels from the EMA maps, cropped like the images; scribbled -> ignore."""
        if self.ema is None:
            raise RuntimeError("S2L EMA maps are not initialised: they are created when fitting starts")
        crops = [
            self.ema.crop(image_id, CropGeometry.from_tensor(geometry))
            for image_id, geometry in zip(batch["id"], batch["geometry"].cpu(), strict=True)
        ]
        target = batch["target"]
        pseudo = pseudo_labels(torch.from_numpy(np.stack(crops)).to(target.device), self.tau, self.ignore_index)
        pseudo[target != self.ignore_index] = self.ignore_index
        return pseudo

    def compute_loss(self, logits: torch.Tensor, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        """{"loss", "loss_sp"[, "loss_up", "pseudo_fraction"]} for one batch at `epoch`."""
        loss_sp = cross_entropy_or_zero(logits, batch["target"], self.ignore_index)
        terms = {"loss": loss_sp, "loss_sp": loss_sp.detach()}
        if self.uses_pseudo_labels(epoch):
            pseudo = self.pseudo_targets(batch)
            loss_up = cross_entropy_or_zero(logits, pseudo, self.ignore_index)
            unscribbled = (batch["target"] == self.ignore_index).sum().clamp(min=1)
            terms.update(loss=loss_sp + self.lam * loss_up, loss_up=loss_up.detach(),
                         pseudo_fraction=(pseudo != self.ignore_index).sum() / unscribbled)
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.compute_loss(self(batch["image"]), batch, self.current_epoch)
        self.log_dict({f"train/{k}": v.float() for k, v in terms.items()}, prog_bar=True,
                      batch_size=len(batch["image"]))
        return terms["loss"]

    # ----- validation on scribbles (no ground truth) ---------------------------------------------------------
    def validate_probabilities(self, probs: np.ndarray, batch: dict, k: int) -> None:
        """Cross-entropy of the whole-image prediction on the image's scribbled pixels (val/scribble_loss)."""
        if not self.uses_val_targets:
            return
        if "target" not in batch:
            raise RuntimeError("method.module.val_scribble_loss=true but the validation batch has no scribble target")
        target = np.asarray(batch["target"][k].cpu())
        scribbled = target != self.ignore_index
        if scribbled.any():
            picked = np.take_along_axis(probs, np.where(scribbled, target, 0)[None].astype(np.int64), axis=0)[0]
            self.val_scribble.update(torch.from_numpy(-np.log(np.clip(picked[scribbled], 1e-8, None))).double())

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.uses_val_targets and self.val_scribble.update_count:
            self.log("val/scribble_loss", self.val_scribble.compute().float(), prog_bar=True, sync_dist=True)
        self.val_scribble.reset()

    # ----- EMA maps ----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.trainer.max_epochs in (None, -1):
            log.warning("S2L's warm-up and EMA period count epochs: set trainer.max_epochs=N trainer.max_steps=-1")
        if self.pce_only:
            return
        self._ema_source = self._training_images()
        ids = list(self._ema_source.ids)
        shapes = [image_shape(path) for path in self._ema_source.image_paths]
        if self.ema is None:
            self.ema = EmaMaps.zeros(ids, shapes, self.ema_dtype)
        else:  # restored from a checkpoint
            self.ema.check_matches(ids, shapes)
            # A checkpoint written at validation end precedes its epoch's update. Lightning 2.6 re-runs that epoch's
            # end on resume (then this is a no-op); a resume that starts at the next epoch catches up here.
            self.maybe_update_ema(self.current_epoch - 1)

    def on_train_epoch_end(self) -> None:
        self.maybe_update_ema(self.current_epoch)

    def maybe_update_ema(self, epoch: int) -> bool:
        """Update Ȳ after `epoch` when (epoch + 1) mod Q == 0 and it was not done yet; True when it ran."""
        if self.pce_only or epoch < 0 or not is_update_epoch(epoch, self.ema_period):
            return False
        if self.ema is None or self.ema.last_update_epoch >= epoch:
            return False
        self.run_ema_update(epoch)
        return True

    def run_ema_update(self, epoch: int) -> None:
        """p_fg of every training image (whole image, eval mode), blended into Ȳ; sharded over DDP ranks."""
        was_training = self.training
        self.eval()
        broadcast_buffers(self.net)
        try:
            trainer = self._trainer
            progress = trainer is not None and trainer.is_global_zero and trainer.progress_bar_callback is not None
            update_ema_maps(self.ema, self._ema_source, lambda image: self.predict_probabilities(image)[1],
                            self.alpha, epoch, progress=progress)
        finally:
            self.train(was_training)

    def _training_images(self):
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "whole_image_dataset"):
            raise RuntimeError("method=s2l needs a data module with whole_image_dataset('train', with_labels=False)")
        return datamodule.whole_image_dataset("train", with_labels=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is None:
            return
        if self.ema_store == "checkpoint":
            checkpoint[CHECKPOINT_KEY] = self.ema.state_dict()
        elif self._trainer is None or self.trainer.is_global_zero:  # every rank holds the same maps
            checkpoint[CHECKPOINT_KEY] = save_sidecar(self.ema, self.ema_sidecar_dir)
            self.prune_sidecars()

    def on_fit_end(self) -> None:
        self.prune_sidecars()  # the checkpoint callbacks may have deleted checkpoints after the last save

    def prune_sidecars(self) -> None:
        """Sidecar files no checkpoint of this run refers to are deleted (except the current maps' file)."""
        if self.ema is None or self.ema_store != "sidecar" or not self.ema_prune_sidecars or self._trainer is None:
            return
        if self.trainer.is_global_zero:
            writers = (*self.trainer.checkpoint_callbacks, *(c for c in self.trainer.callbacks if isinstance(c, LastCheckpoint)))
            dirs = sorted({str(cb.dirpath) for cb in writers if getattr(cb, "dirpath", None)})
            prune_sidecars(self.ema_sidecar_dir, dirs, keep=sidecar_path(self.ema, self.ema_sidecar_dir))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if CHECKPOINT_KEY in checkpoint:
            state = checkpoint[CHECKPOINT_KEY]
            self.ema = (load_sidecar(state, self.ema_sidecar_dir) if is_sidecar_reference(state)
                        else EmaMaps.from_state_dict(state))
            if self.ema.dtype_name != self.ema_dtype:
                log.warning("checkpoint EMA maps are %s, method.module.ema_dtype=%s: kept as %s",
                            self.ema.dtype_name, self.ema_dtype, self.ema.dtype_name)
        elif not self.pce_only:
            log.warning("checkpoint has no S2L EMA maps (%s): they restart from 0", CHECKPOINT_KEY)

    # ----- optimisation ----------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Encoder at lr_encoder; decoder (and the head, unless faithful_frozen_head) at lr_decoder."""
        encoder = list(self.net.encoder.parameters())
        head = list(self.net.segmentation_head.parameters())
        taken = {id(p) for p in encoder + head}
        decoder = [p for p in self.net.parameters() if id(p) not in taken]
        groups = [{"params": encoder, "lr": self.lr_encoder, "name": "encoder"},
                  {"params": decoder, "lr": self.lr_decoder, "name": "decoder"}]
        if not self.faithful_frozen_head:  # the reference left the head out of every group (docs/methods/s2l.md#reference-quirks, 1)
            groups.append({"params": head, "lr": self.lr_decoder, "name": "head"})
        return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]

    # ----- instances -----------------------------------------------------------------------------------------
    def probabilities_to_instances(self, probs: np.ndarray) -> np.ndarray:
        return semantic_to_instance(probs[1] > 0.5, **self.instance_options)


def check_options(warmup_epochs, ema_period, tau, alpha, lam, ema_store, faithful_crop32, instances) -> None:
    """One clear error per bad S2L setting."""
    if int(warmup_epochs) < 0:
        raise ValueError(f"method.module.warmup_epochs={warmup_epochs}; expected >= 0")
    if int(ema_period) < 1:
        raise ValueError(f"method.module.ema_period={ema_period}; expected >= 1 (epochs between EMA updates)")
    if not 0.5 <= float(tau) <= 1.0:
        raise ValueError(f"method.module.tau={tau}; expected 0.5 <= tau <= 1 (ŷ=1 above tau, 0 below 1 - tau)")
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"method.module.alpha={alpha}; expected 0 < alpha <= 1 (EMA weight of the new prediction)")
    if float(lam) < 0:
        raise ValueError(f"method.module.lam={lam}; expected >= 0")
    if ema_store not in EMA_STORES:
        raise ValueError(f"method.module.ema_store={ema_store!r}; expected one of {EMA_STORES} (maps inside each "
                         "checkpoint, or in a file beside it that the checkpoint names with its sha256)")
    if faithful_crop32:
        raise ValueError("method.module.faithful_crop32=true (top-left crop to /32) is not implemented; inputs are "
                         "reflect-padded to /32 and outputs cropped back")
    if instances not in INSTANCE_METHODS:
        raise ValueError(f"method.module.instances={instances!r}; expected one of {sorted(INSTANCE_METHODS)}")


def image_shape(path) -> tuple[int, int]:
    """(H, W) of an image file from its header."""
    with Image.open(path) as image:
        return image.height, image.width
