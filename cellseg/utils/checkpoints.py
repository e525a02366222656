"""Reading checkpoints: one helper, so a truncated or foreign file fails with an error that names it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

EXPECTED = "a Lightning checkpoint (.ckpt) written by this project's train.py"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, or not one of this project's checkpoints."""


def read_checkpoint(path: str | os.PathLike, *, required: Sequence[str] = ("state_dict",), weights_only: bool = True,
                    mmap: bool = False) -> dict:
    """The checkpoint dict at `path`, loaded on the CPU (`torch.load` with `weights_only` and `mmap`).

    Any failure (missing file, truncated or corrupt archive, an object that is not a dict, a missing key of
    `required`) raises one CheckpointError (FileNotFoundError for a missing file) naming `path` and what was
    expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected {EXPECTED}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for broken files
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}); expected {EXPECTED} "
                              "- is the file truncated (an interrupted copy or save)?") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict; expected {EXPECTED}")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; expected {EXPECTED}")
    return checkpoint
