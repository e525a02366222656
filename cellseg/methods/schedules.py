"""Iteration-based learning-rate schedules whose length is known only once the trainer exists."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR


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


def cosine_warm_restarts(
    optimizer: Optimizer,
    total_steps: int,
    T_0: int = 2,
    T_mult: int = 2,
    eta_min: float = 1.0e-6,
    cycles: int | None = None,
) -> CosineAnnealingWarmRestarts:
    """Cosine annealing with warm restarts, stepped every iteration.

    `cycles=None` keeps `T_0` (the S2L reference: restarts at 2, 6, 14, ... iterations, so a short run stops
    mid-cycle near the peak rate). `cycles=k` fits `T_0` so that k cycles end at `total_steps`: the last
    checkpoint is then taken at the bottom of a cycle, as with any annealed schedule.
    """
    if cycles is not None:
        if cycles < 1:
            raise ValueError(f"scheduler.cycles must be >= 1 (or null for the fixed T_0), got {cycles}")
        span = sum(T_mult**k for k in range(cycles))
        T_0 = max(1, math.ceil(total_steps / span))
    return CosineAnnealingWarmRestarts(optimizer, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
