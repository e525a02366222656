"""Slow reference metrics, used only to validate the fast path (tests) and to time it (benchmarks).

Deliberately simple, after HoVer-Net `metrics/stats_utils.py`: ids remapped in ascending order (`remap_label`),
one full-size boolean mask per instance, pairwise intersection/union matrices filled mask by mask, then
`get_fast_aji`, `get_fast_aji_plus`, `get_fast_pq` and Dice formulas on those dense matrices. Masks are built on
the fly rather than cached so a 1000 x 1000 image with ~800 nuclei stays within memory. The faithful S2L mDice is a
literal per-label loop that deletes border objects from a copy of the 8-bit GT, as S2L's evaluator does.
Never use these in production code: they are O(instances x pixels).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment


def remap_label(label: np.ndarray) -> np.ndarray:
    """Ids 1..N in ascending order of the original ids (0 stays background)."""
    out = np.zeros(label.shape, np.int64)
    ids = [i for i in np.unique(label) if i != 0]
    for new_id, old_id in enumerate(ids, start=1):
        out[label == old_id] = new_id
    return out


def pairwise_overlaps(gt: np.ndarray, pred: np.ndarray):
    """Dense (Ng x Np) intersection and union matrices, plus instance areas, from per-instance masks."""
    n_gt, n_pred = int(gt.max(initial=0)), int(pred.max(initial=0))
    inter = np.zeros((n_gt, n_pred))
    union = np.zeros((n_gt, n_pred))
    pred_area = np.array([np.count_nonzero(pred == j) for j in range(1, n_pred + 1)], dtype=np.float64)
    gt_area = np.zeros(n_gt)
    for i in range(1, n_gt + 1):
        gt_mask = gt == i
        gt_area[i - 1] = gt_mask.sum()
        for j in np.unique(pred[gt_mask]):
            if j == 0:
                continue
            pred_mask = pred == j
            inter[i - 1, j - 1] = np.count_nonzero(gt_mask & pred_mask)
            union[i - 1, j - 1] = np.count_nonzero(gt_mask | pred_mask)
    return inter, union, gt_area, pred_area


def reference_metrics(gt: np.ndarray, pred: np.ndarray, match_iou: float = 0.5) -> dict[str, float]:
    """All clean metrics by the per-instance-mask method; same empty-image policy as the fast path."""
    gt, pred = remap_label(gt), remap_label(pred)
    inter, union, gt_area, pred_area = pairwise_overlaps(gt, pred)
    n_gt, n_pred = inter.shape
    iou = inter / (union + 1.0e-6)
    out = {}
    if n_gt + n_pred == 0:
        for name in ("aji", "aji_plus", "pq", "dq", "sq", "f1_obj", "precision_obj", "recall_obj"):
            out[name] = math.nan
    else:
        out["aji"] = _aji(inter, union, iou, gt_area, pred_area)
        out["aji_plus"] = _aji_plus(inter, union, iou, gt_area, pred_area)
        out.update(_pq(iou, match_iou))
    out.update(_pixel_metrics(gt > 0, pred > 0))
    out["s2l_mdice"] = _mdice(inter, gt_area, pred_area)
    return out


def _aji(inter, union, iou, gt_area, pred_area) -> float:
    if iou.size == 0:
        return 0.0
    paired_pred = np.argmax(iou, axis=1)
    paired_true = np.nonzero(np.max(iou, axis=1) > 0.0)[0]
    paired_pred = paired_pred[paired_true]
    num = inter[paired_true, paired_pred].sum()
    den = union[paired_true, paired_pred].sum()
    return float(num / (den + _unpaired_area(gt_area, paired_true) + _unpaired_area(pred_area, paired_pred)))


def _aji_plus(inter, union, iou, gt_area, pred_area) -> float:
    if iou.size == 0:
        return 0.0
    paired_true, paired_pred = linear_sum_assignment(-iou)
    keep = iou[paired_true, paired_pred] > 0.0
    paired_true, paired_pred = paired_true[keep], paired_pred[keep]
    num = inter[paired_true, paired_pred].sum()
    den = union[paired_true, paired_pred].sum()
    return float(num / (den + _unpaired_area(gt_area, paired_true) + _unpaired_area(pred_area, paired_pred)))


def _unpaired_area(area, paired) -> float:
    paired = {int(k) for k in paired}
    return float(sum(area[k] for k in range(len(area)) if k not in paired))


def _pq(iou, match_iou: float) -> dict[str, float]:
    n_gt, n_pred = iou.shape
    paired_true, paired_pred = np.nonzero(iou > match_iou)
    tp = len(paired_true)
    fp, fn = n_pred - tp, n_gt - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = iou[paired_true, paired_pred].sum() / (tp + 1.0e-6)
    return {
        "pq": dq * sq,
        "dq": dq,
        "sq": sq,
        "f1_obj": 2 * tp / (2 * tp + fp + fn),
        "precision_obj": tp / (tp + fp) if tp + fp else 0.0,
        "recall_obj": tp / (tp + fn) if tp + fn else 0.0,
    }


def _pixel_metrics(gt_fg: np.ndarray, pred_fg: np.ndarray) -> dict[str, float]:
    tp = np.count_nonzero(gt_fg & pred_fg)
    total = np.count_nonzero(gt_fg) + np.count_nonzero(pred_fg)
    bg_both = np.count_nonzero(~gt_fg & ~pred_fg)
    bg_union = np.count_nonzero(~gt_fg | ~pred_fg)
    iou_fg = tp / (total - tp) if total else math.nan
    iou_bg = bg_both / bg_union if bg_union else math.nan
    terms = [v for v in (iou_fg, iou_bg) if not math.isnan(v)]
    return {
        "dice": 2.0 * tp / total if total else math.nan,
        "iou_fg": iou_fg,
        "miou_bin": sum(terms) / len(terms) if terms else math.nan,
    }


def _mdice(inter, gt_area, pred_area) -> float:
    if len(gt_area) == 0:
        return math.nan
    scores = []
    for i in range(len(gt_area)):
        if inter.shape[1] == 0 or inter[i].max() == 0:
            scores.append(0.0)
            continue
        j = int(np.argmax(inter[i]))
        scores.append(2.0 * inter[i, j] / (gt_area[i] + pred_area[j]))
    return float(np.mean(scores))


def reference_s2l_mdice_faithful(gt: np.ndarray, pred: np.ndarray) -> float:
    """Literal per-label loop of S2L's evaluator on a copy of the 8-bit (saturated) GT."""
    target = np.minimum(gt, 255).astype(np.uint8)
    stop = (int(target.max()) + 1) % 256  # uint8 arithmetic: 255 + 1 wraps to 0
    mean = 0.0
    for index, label in enumerate(range(1, stop)):
        if np.count_nonzero(target == label) < 20:
            target[target == label] = 0
        inside = pred[target == label]
        inside = inside[inside != 0]
        if inside.size:
            ids, counts = np.unique(inside, return_counts=True)
            pred_mask = pred == ids[np.argmax(counts)]
        else:
            border = np.concatenate([target[0], target[-1], target[:, 0], target[:, -1]])
            for border_label in np.unique(border):
                target[target == border_label] = 0
            pred_mask = np.zeros(pred.shape, bool)
        gt_mask = target == label
        tp = np.count_nonzero(gt_mask & pred_mask)
        score = (2 * tp + 1e-4) / (np.count_nonzero(gt_mask) + np.count_nonzero(pred_mask) + 1e-4)
        mean = (mean * index + score) / (index + 1)
    return float(mean)
