"""Iteration-based learning-rate schedules whose length is known only once the trainer exists."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 100, min_factor: float = 0.01) -> LambdaLR:
    """Linear warm-up, then cosine decay to `min_factor` of the base learning rate at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def poly(optimizer: Optimizer, total_steps: int, power: float = 0.9) -> LambdaLR:
    """Polynomial decay (DeepLab): (1 - step / total) ** power."""
    return LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, total_steps)) ** power)
