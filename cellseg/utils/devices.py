"""Lightning's accelerator names (`cpu`, `gpu`, `cuda`, `mps`, `auto`) as torch devices, for code that moves
modules itself (inference, per-image pipeline stages)."""

from __future__ import annotations

import torch

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


def torch_device(accelerator: str, key: str = "accelerator") -> torch.device:
    """`gpu`/`cuda` -> the current CUDA device, `auto` -> CUDA when visible else the CPU; an accelerator that is
    not available or not known raises one ValueError naming `key`."""
    name = str(accelerator).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"{key}={accelerator}, but no CUDA device is visible; use {key}=cpu")
        return torch.device("cuda")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{key}={accelerator}, but MPS is not available; use {key}=cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"{key}={accelerator}; expected one of {', '.join(ACCELERATORS)}")
