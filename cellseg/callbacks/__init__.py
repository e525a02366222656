"""Lightning callbacks of the framework (added by the trainer builder, or named in `configs/callbacks/`)."""

from cellseg.callbacks.ema_weights import EmaWeights
from cellseg.callbacks.last_checkpoint import LastCheckpoint
from cellseg.callbacks.rng_state import RandomStateCheckpoint
from cellseg.callbacks.wandb_run_id import WandbRunId

__all__ = ["EmaWeights", "LastCheckpoint", "RandomStateCheckpoint", "WandbRunId"]
