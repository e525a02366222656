"""ORACLE diagnostic of S2L's pseudo-labels: after every EMA update, their pixel precision and recall against the
training ground truth. For reporting only: it reads the training masks, which the method never does, and it
changes nothing in training (no random draw, no state in checkpoints).

Opt in with `callbacks=s2l_pseudo_oracle`. Each update adds a row to `<output_dir>/pseudo_label_oracle.csv`
(rewritten atomically) and logs `oracle/pseudo_*` to every logger at the step it happened:
fg_share / bg_share / undecided_share (pixels with EMA > tau, < 1 - tau, in between), fg_precision / fg_recall
(GT foreground among / covered by the foreground pseudo-labels) and bg_precision / bg_recall (likewise for the
background). Pixels are pooled over all training images, scribbled ones included.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from cellseg.metrics.pseudo_labels import pixel_pseudo_label_counts, summarise_pixel_quality
from cellseg.utils.io import atomic_path, read_label

log = logging.getLogger(__name__)

FILE_NAME = "pseudo_label_oracle.csv"


class PseudoLabelOracle(pl.Callback):
    """Scores a module's per-image foreground maps (`pl_module.ema`, thresholded at `pl_module.tau`)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / FILE_NAME
        self.rows: list[dict] = []
        self._labels: dict[str, Path] | None = None

    # The module updates its maps in its own on_train_epoch_end, which Lightning calls after the callbacks'.
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._score_new_update(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._score_new_update(trainer, pl_module)

    def _score_new_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        maps = getattr(pl_module, "ema", None)
        if maps is None or maps.n_updates == 0 or not trainer.is_global_zero:
            return
        if self.rows and self.rows[-1]["ema_epoch"] == maps.last_update_epoch:
            return
        row = {"ema_epoch": maps.last_update_epoch, "update": maps.n_updates, "step": trainer.global_step,
               **self.score(maps, float(pl_module.tau), self._label_paths(trainer))}
        self.rows.append(row)
        self._write()
        metrics = {f"oracle/pseudo_{k}": v for k, v in row.items() if k not in ("ema_epoch", "update", "step")}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        log.info("pseudo-label oracle after EMA update %d: %s", maps.n_updates,
                 ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

    @staticmethod
    def score(maps, tau: float, label_paths: dict[str, Path]) -> dict:
        missing = sorted(set(maps.ids) - set(label_paths))
        if missing:
            raise KeyError(f"no training label for EMA map(s) {missing[:3]}: the oracle needs the training masks")
        counts = (pixel_pseudo_label_counts(maps[i].float().numpy(), read_label(label_paths[i]), tau)
                  for i in maps.ids)
        return summarise_pixel_quality(counts)

    def _label_paths(self, trainer: pl.Trainer) -> dict[str, Path]:
        if self._labels is None:
            dataset = trainer.datamodule.whole_image_dataset("train", with_labels=True)
            self._labels = dict(zip(dataset.ids, dataset.label_paths, strict=True))
        return self._labels

    def _write(self) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows({k: (f"{v:.6f}" if isinstance(v, float) and np.isfinite(v) else v) for k, v in row.items()}
                             for row in self.rows)
