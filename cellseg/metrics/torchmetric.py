"""torchmetrics wrappers (docs/metrics.md#torchmetrics-wrappers): tables are built on CPU per image, only scalar sums cross ranks.

States (float64, `dist_reduce_fx="sum"`): per metric the sum of defined per-image values, the defined count and
the undefined count; per pooled quantity its dataset sum (`pool_<field>`). With `per_image=True`, two `cat` states
hold one row per image: the image id as UTF-8 bytes and the row of values and sums. At `compute`, rows whose id was
seen before (DistributedSampler padding) are dropped and every result is recomputed from the remaining rows, so
final numbers are exact under DDP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from cellseg.metrics.aggregate import aggregate, check_metric_names, needs_faithful
from cellseg.metrics.instance import (
    CLEAN_METRICS,
    DEFAULT_MATCH_IOU,
    STAT_FIELDS,
    ImageStats,
    image_stats,
    metrics_from_sums,
)

MAX_ID_BYTES = 128
PIXEL_METRICS = ("dice", "iou_fg", "miou_bin")


class InstanceSegMetrics(Metric):
    """Instance metrics of label maps, accumulated over batches and ranks.

    `update(preds, targets, image_ids=None, ignore_masks=None)`: B x H x W tensors/arrays or lists of H x W maps.
    `compute()` returns {name, name_pooled, name_n_undefined} as 0-d float64 tensors (no pooled form for the
    faithful S2L metrics). `per_image=True` needs `image_ids` (str or int) and enables `per_image_rows()`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, names: Iterable[str] | None = None, match_iou: float = DEFAULT_MATCH_IOU,
                 per_image: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = check_metric_names(names)
        self.match_iou = float(match_iou)
        self.per_image = bool(per_image)
        self.row_columns = self.names + STAT_FIELDS
        for name in self.names:
            for suffix in ("sum", "defined", "undefined"):
                self.add_state(f"{name}_{suffix}", default=_zero(), dist_reduce_fx="sum")
        for field in STAT_FIELDS:
            self.add_state(f"pool_{field}", default=_zero(), dist_reduce_fx="sum")
        if self.per_image:
            self.add_state("image_ids", default=[], dist_reduce_fx="cat")
            self.add_state("image_rows", default=[], dist_reduce_fx="cat")

    def update(self, preds, targets, image_ids: Sequence | None = None, ignore_masks=None) -> None:
        pred_list = _as_label_list(preds, "preds")
        target_list = _as_label_list(targets, "targets")
        if len(pred_list) != len(target_list):
            raise ValueError(f"got {len(pred_list)} predictions but {len(target_list)} targets; expected equal")
        ignore_list = [None] * len(pred_list) if ignore_masks is None else _as_label_list(ignore_masks, "ignore")
        ids = _check_ids(image_ids, len(pred_list), required=self.per_image)
        batch = [
            self._image_stats(target, pred, ignore)
            for pred, target, ignore in zip(pred_list, target_list, ignore_list, strict=True)
        ]
        self._add_sums(batch)
        if self.per_image:
            # on the metric's device: NCCL gathers CUDA tensors only
            self.image_ids.append(torch.from_numpy(_encode_ids(ids)).to(self.device))
            rows = [[stats.to_row()[column] for column in self.row_columns] for stats in batch]
            self.image_rows.append(torch.tensor(rows, dtype=torch.float64, device=self.device)
                                   .reshape(-1, len(self.row_columns)))

    def _image_stats(self, target, pred, ignore) -> ImageStats:
        return image_stats(target, pred, ignore, match_iou=self.match_iou, faithful=needs_faithful(self.names))

    def _add_sums(self, batch: list[ImageStats]) -> None:
        for name in self.names:
            values = [stats.values[name] for stats in batch]
            defined = [v for v in values if not math.isnan(v)]
            getattr(self, f"{name}_sum").add_(math.fsum(defined))
            getattr(self, f"{name}_defined").add_(len(defined))
            getattr(self, f"{name}_undefined").add_(len(values) - len(defined))
        for field in STAT_FIELDS:
            getattr(self, f"pool_{field}").add_(math.fsum(getattr(stats, field) for stats in batch))

    def compute(self) -> dict[str, torch.Tensor]:
        if self.per_image:
            summary = aggregate([ImageStats.from_row(row) for row in self._unique_rows()[1]], self.names)
        else:
            summary = self._summary_from_sums()
        summary.pop("n_images", None)
        return {key: torch.tensor(float(value), dtype=torch.float64, device=self.device) for key, value in summary.items()}

    def _summary_from_sums(self) -> dict[str, float]:
        pooled = metrics_from_sums({field: float(getattr(self, f"pool_{field}")) for field in STAT_FIELDS})
        summary: dict[str, float] = {}
        for name in self.names:
            defined = float(getattr(self, f"{name}_defined"))
            summary[name] = float(getattr(self, f"{name}_sum")) / defined if defined > 0 else math.nan
            summary[f"{name}_n_undefined"] = float(getattr(self, f"{name}_undefined"))
            if name in CLEAN_METRICS:
                summary[f"{name}_pooled"] = pooled[name]
        return summary

    def _unique_rows(self) -> tuple[list[str], list[dict[str, float]]]:
        """Per-image (ids, rows) sorted by id, one row per id (arrival order differs across ranks and merges)."""
        if isinstance(self.image_ids, list) and not self.image_ids:
            return [], []
        id_bytes = dim_zero_cat(self.image_ids).cpu().numpy()
        rows = dim_zero_cat(self.image_rows).cpu().numpy().reshape(-1, len(self.row_columns))
        _, first = np.unique(id_bytes, axis=0, return_index=True)  # a duplicate is the same image: keep one
        ids = [_decode_id(id_bytes[i]) for i in first]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        return [ids[k] for k in order], [dict(zip(self.row_columns, rows[first[k]].tolist(), strict=True))
                                         for k in order]

    def per_image_rows(self) -> list[dict[str, float | str]]:
        """One dict per image (duplicates dropped, synced across ranks): image_id, metric values, sums."""
        if not self.per_image:
            raise ValueError("per_image_rows() needs InstanceSegMetrics(per_image=True)")
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync and not self._is_synced,
                               should_unsync=self._should_unsync):
            ids, rows = self._unique_rows()
        return [{"image_id": image_id, **row} for image_id, row in zip(ids, rows, strict=True)]


class SemanticSegMetrics(InstanceSegMetrics):
    """Pixel metrics (dice, iou_fg, miou_bin) of binary maps: inputs are thresholded at > 0."""

    def __init__(self, names: Iterable[str] | None = None, per_image: bool = False, **kwargs) -> None:
        names = PIXEL_METRICS if names is None else tuple(names)
        not_pixel = [name for name in names if name not in PIXEL_METRICS]
        if not_pixel:
            raise ValueError(f"SemanticSegMetrics offers {list(PIXEL_METRICS)}; got {not_pixel}")
        super().__init__(names=names, per_image=per_image, **kwargs)

    def _image_stats(self, target, pred, ignore) -> ImageStats:
        return image_stats(np.asarray(target) > 0, np.asarray(pred) > 0, ignore, match_iou=self.match_iou)


def _zero() -> torch.Tensor:
    return torch.tensor(0.0, dtype=torch.float64)


def _as_label_list(batch, what: str) -> list[np.ndarray]:
    """B x H x W tensor/array, one H x W map, or a list of H x W maps -> list of numpy arrays."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    if isinstance(batch, np.ndarray):
        if batch.ndim == 2:
            return [batch]
        if batch.ndim == 3:
            return list(batch)
        raise ValueError(f"{what} has shape {batch.shape}; expected B x H x W or H x W")
    if isinstance(batch, (list, tuple)):
        items = [item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
                 for item in batch]
        bad = [i for i, item in enumerate(items) if item.ndim != 2]
        if bad:
            raise ValueError(f"{what} items {bad} are not H x W maps")
        return items
    raise ValueError(f"{what} is a {type(batch).__name__}; expected a tensor, an array or a list of H x W maps")


def _check_ids(image_ids, batch_size: int, required: bool) -> list[str]:
    if image_ids is None:
        if required:
            raise ValueError("per_image=True needs image_ids in update() to drop duplicated images")
        return []
    if isinstance(image_ids, torch.Tensor):
        image_ids = image_ids.reshape(-1).tolist()
    if isinstance(image_ids, (str, int)):
        image_ids = [image_ids]
    ids = [str(i.item() if hasattr(i, "item") else i) for i in image_ids]
    if len(ids) != batch_size:
        raise ValueError(f"got {len(ids)} image_ids for a batch of {batch_size} images")
    return ids


def _encode_ids(ids: list[str]) -> np.ndarray:
    encoded = np.zeros((len(ids), MAX_ID_BYTES), np.uint8)
    for row, image_id in enumerate(ids):
        data = image_id.encode("utf-8")
        if len(data) > MAX_ID_BYTES:
            raise ValueError(f"image id '{image_id}' is longer than {MAX_ID_BYTES} bytes")
        encoded[row, : len(data)] = np.frombuffer(data, np.uint8)
    return encoded


def _decode_id(row: np.ndarray) -> str:
    return bytes(row).rstrip(b"\x00").decode("utf-8")
