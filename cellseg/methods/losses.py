"""Segmentation losses with an ignore index."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cellseg.utils.ignore import IGNORE_CLASS


def cross_entropy_or_zero(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over non-ignored pixels; 0 (not NaN) when no pixel is valid."""
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice on non-ignored pixels of the batch."""
    probs = logits.softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1).to(probs.dtype)
    one_hot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot * valid).sum(dims)
    denominator = (probs * valid).sum(dims) + (one_hot * valid).sum(dims)
    return 1.0 - ((2 * intersection + eps) / (denominator + eps)).mean()


class CEDiceLoss(torch.nn.Module):
    """ce_weight * CE + dice_weight * soft Dice, both ignoring `ignore_index`."""

    def __init__(self, ignore_index: int = IGNORE_CLASS, ce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.ignore_index, self.ce_weight, self.dice_weight = ignore_index, ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = cross_entropy_or_zero(logits, target, self.ignore_index)
        dice = soft_dice_loss(logits, target, self.ignore_index)
        return {"loss": self.ce_weight * ce + self.dice_weight * dice, "ce": ce, "dice": dice}


def foreground_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_CLASS) -> torch.Tensor:
    """Per sample 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) on softmax channel 1 over valid pixels; batch mean."""
    prob = logits.softmax(dim=1)[:, 1]
    valid = (target != ignore_index).to(prob.dtype)
    truth = (target == 1).to(prob.dtype) * valid
    prob = prob * valid
    dims = tuple(range(1, prob.ndim))
    dice = (2 * (prob * truth).sum(dims) + 1) / (prob.sum(dims) + truth.sum(dims) + 1)
    return (1 - dice).mean()
