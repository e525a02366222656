"""Lightning callback writing each predicted instance map as a 16-bit PNG as soon as its batch is done."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from cellseg.utils.io import write_label


class InstanceMapWriter(BasePredictionWriter):
    """Writes `<folder>/<id>.png`; DDP ranks write disjoint ids (duplicates of a padded sampler rewrite the same file)."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.folder = Path(folder)

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        for item in prediction:
            write_label(self.folder / f"{item['id']}.png", item["instances"])
