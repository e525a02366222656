"""Faithful Scribble2Label evaluation metrics, quirks included (docs/metrics.md#faithful-variants).

`s2l_mdice_faithful` reproduces S2L `scripts/metric_mdice.py` (from WSISPDR) on an instance prediction:
- GT is converted to 8 bits with saturation (ids >= 255 become 255, merging them);
- the loop t = 1 .. max(GT) runs in uint8 arithmetic, so max = 255 gives an empty loop and an image score of 0
  (as does an empty GT);
- the matched prediction of GT t is the one with most pixels inside t (lowest id on ties);
  d_t = (2I + 1e-4) / (|A| + |B| + 1e-4);
- a label absent from GT, or an object < 20 px, gives an empty GT mask and so scores 1.0;
- the first time a label is absent, < 20 px or has no overlapping prediction, every GT object touching the image
  border is deleted in place: a deleted object scores 1.0 when its turn comes (this includes the missed object
  itself when it touches the border), while a missed interior object scores ~0.
The image score is the running mean over t; scores are averaged over images.

Computed from one contingency table of the 8-bit GT against the prediction; the per-label loop is a loop over at
most 254 scalars, never over masks.
"""

from __future__ import annotations

import numpy as np

from cellseg.metrics.table import as_label_array, contingency_table

S2L_DICE_EPS = 1.0e-4
S2L_IOU_EPS = 1.0e-6
S2L_MIN_OBJECT_PX = 20
UINT8_MAX = 255


def saturate_to_uint8(gt: np.ndarray) -> np.ndarray:
    """S2L reads the GT as 8 bits: ids >= 255 all become 255."""
    return np.minimum(gt, UINT8_MAX).astype(np.uint8)


def border_ids(label: np.ndarray) -> set[int]:
    """Nonzero ids present on the first/last row and column."""
    border = np.concatenate([label[0, :], label[-1, :], label[:, 0], label[:, -1]])
    return {int(v) for v in np.unique(border) if v != 0}


def s2l_mdice_faithful(gt, pred) -> float:
    """S2L's per-image mDice with all its quirks (see the module docstring)."""
    gt8 = saturate_to_uint8(as_label_array(gt, "GT"))
    pred = as_label_array(pred, "prediction")
    top = int(gt8.max()) if gt8.size else 0
    if top in (0, UINT8_MAX):  # range(1, uint8(top) + 1) is empty: the running mean stays 0
        return 0.0
    table = contingency_table(gt8, pred)
    area = np.zeros(top + 1, np.int64)
    area[table.gt_ids] = table.gt_area
    match_inter, match_area = _most_overlapping_prediction(table, top)
    on_border = border_ids(gt8)
    border_deleted = False
    mean = 0.0
    for index, t in enumerate(range(1, top + 1)):
        deleted = border_deleted and t in on_border
        if area[t] < S2L_MIN_OBJECT_PX or deleted:
            border_deleted = True  # S2L's except-branch: empty mask, border objects deleted
            score = 1.0
        elif match_inter[t] == 0:
            border_deleted = True
            # the missed object is deleted too when it touches the border: its mask becomes empty
            score = 1.0 if t in on_border else S2L_DICE_EPS / (area[t] + S2L_DICE_EPS)
        else:
            score = (2.0 * match_inter[t] + S2L_DICE_EPS) / (area[t] + match_area[t] + S2L_DICE_EPS)
        mean = (mean * index + score) / (index + 1)  # S2L's running mean, kept for bit-level agreement
    return float(mean)


def _most_overlapping_prediction(table, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 8-bit GT id: pixels of the most overlapping prediction inside it (lowest id on ties) and its area."""
    inter = np.zeros(top + 1, np.int64)
    pred_area = np.zeros(top + 1, np.int64)
    if table.inter.size:
        order = np.lexsort((table.cols, -table.inter, table.rows))
        sorted_rows = table.rows[order]
        best = order[np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]]
        ids = table.gt_ids[table.rows[best]]
        inter[ids] = table.inter[best]
        pred_area[ids] = table.pred_area[table.cols[best]]
    return inter, pred_area


def s2l_iou_faithful(gt, pred) -> float:
    """S2L's foreground IoU: (TP + 1e-6) / (|P ∪ G| + 1e-6) on the binary maps, so empty/empty = 1."""
    gt_fg = as_label_array(gt, "GT") > 0
    pred_fg = as_label_array(pred, "prediction") > 0
    if gt_fg.shape != pred_fg.shape:
        raise ValueError(f"GT has shape {gt_fg.shape} but prediction has shape {pred_fg.shape}")
    tp = int(np.count_nonzero(gt_fg & pred_fg))
    return s2l_iou_from_counts(tp, int(gt_fg.sum()), int(pred_fg.sum()))


def s2l_iou_from_counts(tp_px: float, gt_px: float, pred_px: float) -> float:
    return float((tp_px + S2L_IOU_EPS) / (gt_px + pred_px - tp_px + S2L_IOU_EPS))
