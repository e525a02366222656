"""Exponential moving average of a LightningModule's weights (parameters and float buffers), as a callback.

COIN (docs/methods/coin.md#training) updates the EMA after every optimiser step (decay 0.999) and uses it for evaluation and
checkpoints. Here a checkpoint's `state_dict` holds the EMA weights, so any consumer that loads a checkpoint
(`trainer.predict(ckpt_path=...)`, eval.py) gets them; the raw weights travel under `raw_state_dict` and are
put back when training resumes from that checkpoint. When fitting ends (after the final checkpoint, which keeps
both) the EMA weights are copied into the module, so in-process inference after `fit` uses them too. List this
callback before the checkpoint callbacks: a step's average must be updated before that step is saved.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

RAW_STATE_KEY = "raw_state_dict"


class EmaWeights(pl.Callback):
    """ema <- d * ema + (1 - d) * w for every float entry of the state dict (integer buffers are copied).

    `warmup`: d_t = min(decay, (1 + t) / (10 + t)) (timm's ModelEma warm-up), so that short runs (CPU budgets
    of a few hundred steps) are not dominated by the random initialisation; off by default (faithful).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.ema: dict[str, torch.Tensor] | None = None
        self.updates = 0

    # ----- averaging -----------------------------------------------------------------------------------------
    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        state = module.state_dict()
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in state.items()}
            return
        decay = self.current_decay()
        for key, value in state.items():
            shadow = self.ema[key]
            if shadow.is_floating_point():
                shadow.mul_(decay).add_(value.detach().to(shadow.dtype), alpha=1.0 - decay)
            else:
                shadow.copy_(value)
        self.updates += 1

    # ----- Lightning hooks -------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.ema is None:
            self.update(pl_module)
        else:  # resumed: keep the restored average, on the module's device
            self.ema = {k: v.to(_device_of(pl_module)) for k, v in self.ema.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.update(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.ema is not None:
            pl_module.load_state_dict(self.ema)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.ema is None:
            return
        checkpoint[RAW_STATE_KEY] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v.detach().clone().cpu() for k, v in self.ema.items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Resuming a fit: the module was loaded with the EMA (`state_dict`); restore the raw weights."""
        raw = checkpoint.get(RAW_STATE_KEY)
        if raw is None:
            log.warning("checkpoint has no %s: the EMA restarts from its weights", RAW_STATE_KEY)
            return
        device = _device_of(pl_module)
        self.ema = {k: v.detach().clone().to(device) for k, v in checkpoint["state_dict"].items()}
        pl_module.load_state_dict(raw)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates}

    def load_state_dict(self, state_dict: dict) -> None:
        self.updates = int(state_dict.get("updates", 0))


def _device_of(module: torch.nn.Module) -> torch.device:
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
