"""Instance segmentation metrics of one image from one contingency table (docs/metrics.md#definitions).

`image_stats` returns the additive sums of an image (what pooling and the torchmetrics states need) together with
its metric values; `metrics_from_sums` turns sums into metric values, so per-image values and pooled values are
the same formulas applied to one image's sums or to the dataset's sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cellseg.metrics.faithful import s2l_iou_from_counts, s2l_mdice_faithful
from cellseg.metrics.table import IOU_EPS, ContingencyTable, check_label_pair, contingency_table

CLEAN_METRICS = (
    "aji",
    "aji_plus",
    "pq",
    "dq",
    "sq",
    "f1_obj",
    "precision_obj",
    "recall_obj",
    "dice",
    "iou_fg",
    "miou_bin",
    "s2l_mdice",
)
FAITHFUL_METRICS = ("s2l_mdice_faithful", "s2l_iou_faithful")
ALL_METRICS = CLEAN_METRICS + FAITHFUL_METRICS
DEFAULT_MATCH_IOU = 0.5
DENSE_MATCH_MAX_CELLS = 4 * 10**6  # larger overlap blocks are matched one connected component at a time


@dataclass
class ImageStats:
    """Additive sums of one image (pooled over a dataset by summing) and the image's own metric values."""

    aji_num: float = 0.0
    aji_den: float = 0.0
    ajip_num: float = 0.0
    ajip_den: float = 0.0
    tp_o: float = 0.0  # matched pairs (IoU > match_iou)
    fp_o: float = 0.0
    fn_o: float = 0.0
    sum_iou: float = 0.0  # IoU summed over matched pairs
    tp_px: float = 0.0  # pixels foreground in both maps
    pred_px: float = 0.0
    gt_px: float = 0.0
    bg_px: float = 0.0  # C_00
    n_px: float = 0.0
    mdice_sum: float = 0.0  # per-GT Dice of s2l_mdice, summed
    mdice_count: float = 0.0  # number of GT objects
    values: dict[str, float] = field(default_factory=dict)

    def sums(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in STAT_FIELDS}

    def to_row(self) -> dict[str, float]:
        """Metric values then sums, flat (one CSV row / one torchmetrics row)."""
        return {**self.values, **self.sums()}

    @classmethod
    def from_row(cls, row: Mapping[str, float]) -> ImageStats:
        missing = [name for name in STAT_FIELDS if name not in row]
        if missing:
            raise ValueError(f"per-image row lacks the sums {missing}; expected every field of {STAT_FIELDS}")
        values = {name: float(row[name]) for name in ALL_METRICS if name in row}
        return cls(**{name: float(row[name]) for name in STAT_FIELDS}, values=values)


STAT_FIELDS = tuple(f.name for f in fields(ImageStats) if f.name != "values")


def instance_metrics(gt, pred, ignore_mask=None, *, match_iou: float = DEFAULT_MATCH_IOU,
                     faithful: bool = False) -> dict[str, float]:
    """All clean metrics of one image (NaN where undefined); with `faithful=True` also the S2L variants."""
    return dict(image_stats(gt, pred, ignore_mask, match_iou=match_iou, faithful=faithful).values)


def image_stats(gt, pred, ignore_mask=None, *, match_iou: float = DEFAULT_MATCH_IOU,
                faithful: bool = False) -> ImageStats:
    """Sums and metric values of one image from its contingency table.

    `ignore_mask` (True = excluded) removes pixels from both maps; the faithful S2L metrics, which need the
    image geometry, see those pixels as background instead.
    """
    gt, pred, ignore_mask = check_label_pair(gt, pred, ignore_mask)
    stats = stats_from_table(contingency_table(gt, pred, ignore_mask), match_iou)
    stats.values = metrics_from_sums(stats.sums())
    if faithful:
        if ignore_mask is not None:
            gt, pred = np.where(ignore_mask, 0, gt), np.where(ignore_mask, 0, pred)
        stats.values["s2l_mdice_faithful"] = s2l_mdice_faithful(gt, pred)
        stats.values["s2l_iou_faithful"] = s2l_iou_from_counts(stats.tp_px, stats.gt_px, stats.pred_px)
    return stats


def stats_from_table(table: ContingencyTable, match_iou: float = DEFAULT_MATCH_IOU) -> ImageStats:
    if match_iou < 0.5:
        raise ValueError(f"match_iou = {match_iou}; expected >= 0.5 (below it matches are not unique)")
    aji_num, aji_den = aji_sums(table)
    ajip_num, ajip_den = aji_plus_sums(table)
    tp_o, sum_iou = matched_pairs(table, match_iou)
    return ImageStats(
        aji_num=aji_num,
        aji_den=aji_den,
        ajip_num=ajip_num,
        ajip_den=ajip_den,
        tp_o=tp_o,
        fp_o=table.n_pred - tp_o,
        fn_o=table.n_gt - tp_o,
        sum_iou=sum_iou,
        tp_px=table.tp_px,
        pred_px=int(table.pred_area.sum()),
        gt_px=int(table.gt_area.sum()),
        bg_px=table.bg,
        n_px=table.n_px,
        mdice_sum=mdice_sum(table),
        mdice_count=table.n_gt,
    )


def first_per_row(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Cell indices of the first cell of each row in `order` (cells sorted by row first)."""
    if order.size == 0:
        return order
    sorted_rows = rows[order]
    return order[np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]]


def aji_sums(table: ContingencyTable) -> tuple[float, float]:
    """Kumar's AJI: each GT takes its best-IoU prediction (first maximum), a prediction may serve several GTs."""
    iou = table.iou
    best = first_per_row(table.rows, np.lexsort((table.cols, -iou, table.rows)))
    num = int(table.inter[best].sum())
    den = int(table.union[best].sum())
    den += int(table.gt_area.sum() - table.gt_area[table.rows[best]].sum())  # GTs without any overlap
    chosen = np.zeros(table.n_pred, bool)
    chosen[table.cols[best]] = True
    den += int(table.pred_area[~chosen].sum())
    return float(num), float(den)


def aji_plus_sums(table: ContingencyTable) -> tuple[float, float]:
    """AJI+: one-to-one pairs of maximal total IoU; every unpaired instance adds its area to the denominator."""
    pairs = hungarian_cells(table)
    num = int(table.inter[pairs].sum())
    den = int(table.union[pairs].sum())
    den += int(table.gt_area.sum() - table.gt_area[table.rows[pairs]].sum())
    den += int(table.pred_area.sum() - table.pred_area[table.cols[pairs]].sum())
    return float(num), float(den)


def hungarian_cells(table: ContingencyTable) -> np.ndarray:
    """Indices of the overlap cells chosen by `linear_sum_assignment` on -IoU (rows/columns with overlap only)."""
    if table.inter.size == 0:
        return np.zeros(0, np.int64)
    iou = table.iou
    row_ids, row_pos = np.unique(table.rows, return_inverse=True)
    col_ids, col_pos = np.unique(table.cols, return_inverse=True)
    if row_ids.size * col_ids.size <= DENSE_MATCH_MAX_CELLS:
        return _assign_block(row_pos, col_pos, iou, np.arange(iou.size))
    # Blocks of the bipartite overlap graph are independent problems: solve them one at a time.
    n_rows = row_ids.size
    graph = coo_matrix((np.ones(iou.size), (row_pos, n_rows + col_pos)), shape=(n_rows + col_ids.size,) * 2)
    _, component = connected_components(graph, directed=False)
    cell_component = component[row_pos]
    order = np.argsort(cell_component, kind="stable")
    bounds = np.flatnonzero(np.diff(cell_component[order])) + 1
    chosen = []
    for cells in np.split(order, bounds):
        if cells.size == 1:
            chosen.append(cells)
            continue
        _, local_rows = np.unique(row_pos[cells], return_inverse=True)
        _, local_cols = np.unique(col_pos[cells], return_inverse=True)
        chosen.append(_assign_block(local_rows, local_cols, iou[cells], cells))
    return np.sort(np.concatenate(chosen))


def _assign_block(row_pos: np.ndarray, col_pos: np.ndarray, iou: np.ndarray, cells: np.ndarray) -> np.ndarray:
    shape = (int(row_pos.max()) + 1, int(col_pos.max()) + 1)
    cost = np.zeros(shape)
    cost[row_pos, col_pos] = -iou
    cell_at = np.full(shape, -1, np.int64)
    cell_at[row_pos, col_pos] = cells
    assigned_rows, assigned_cols = linear_sum_assignment(cost)
    picked = cell_at[assigned_rows, assigned_cols]
    return picked[picked >= 0]  # a pair on an empty cell has IoU 0 and is no pair


def matched_pairs(table: ContingencyTable, match_iou: float = DEFAULT_MATCH_IOU) -> tuple[int, float]:
    """Pairs with IoU > match_iou (strict; unique when match_iou >= 0.5): their number and summed IoU."""
    iou = table.iou
    matched = iou > match_iou
    return int(matched.sum()), float(iou[matched].sum())


def mdice_sum(table: ContingencyTable) -> float:
    """Σ over GT of 2I/(a_i + b_j*), j* = prediction with most pixels inside GT i (lowest id on ties)."""
    best = first_per_row(table.rows, np.lexsort((table.cols, -table.inter, table.rows)))
    dice = 2.0 * table.inter[best] / (table.gt_area[table.rows[best]] + table.pred_area[table.cols[best]])
    return float(dice.sum())


def metrics_from_sums(sums: Mapping[str, float]) -> dict[str, float]:
    """Clean metric values from one image's sums or from sums over a dataset (pooled); NaN where undefined."""
    tp_o, fp_o, fn_o = sums["tp_o"], sums["fp_o"], sums["fn_o"]
    has_objects = tp_o + fp_o + fn_o > 0
    dq = _ratio(tp_o, tp_o + 0.5 * fp_o + 0.5 * fn_o, has_objects)
    sq = sums["sum_iou"] / (tp_o + IOU_EPS) if has_objects else math.nan
    tp_px, pred_px, gt_px = sums["tp_px"], sums["pred_px"], sums["gt_px"]
    has_fg = pred_px + gt_px > 0
    iou_fg = _ratio(tp_px, pred_px + gt_px - tp_px, has_fg)
    bg_union = sums["n_px"] - tp_px
    iou_bg = sums["bg_px"] / bg_union if bg_union > 0 else math.nan
    defined_terms = [v for v in (iou_fg, iou_bg) if not math.isnan(v)]
    return {
        "aji": _ratio(sums["aji_num"], sums["aji_den"], has_objects),
        "aji_plus": _ratio(sums["ajip_num"], sums["ajip_den"], has_objects),
        "pq": dq * sq,
        "dq": dq,
        "sq": sq,
        "f1_obj": _ratio(2.0 * tp_o, 2.0 * tp_o + fp_o + fn_o, has_objects),
        "precision_obj": _ratio(tp_o, tp_o + fp_o, has_objects),
        "recall_obj": _ratio(tp_o, tp_o + fn_o, has_objects),
        "dice": _ratio(2.0 * tp_px, pred_px + gt_px, has_fg),
        "iou_fg": iou_fg,
        "miou_bin": sum(defined_terms) / len(defined_terms) if defined_terms else math.nan,
        "s2l_mdice": _ratio(sums["mdice_sum"], sums["mdice_count"], sums["mdice_count"] > 0),
    }


def _ratio(num: float, den: float, defined: bool) -> float:
    """num/den; NaN when the metric is undefined, 0 when it is defined but the denominator is empty."""
    if not defined:
        return math.nan
    return float(num) / float(den) if den > 0 else 0.0
