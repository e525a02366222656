"""ORACLE diagnostics of a weak method's pseudo-labels against the training ground truth: for reporting only.

No method, pipeline or weak-label module imports this (a test checks it): benchmarks call it after a run to say
how clean the confident set is. Precision = fraction of accepted instances matching a GT nucleus at IoU > 0.5;
coverage = fraction of GT nuclei matched by an accepted instance (IoU > 0.5 matches are one-to-one).
S2L's semantic pseudo-labels are scored per pixel (`pixel_pseudo_label_counts`), by the callback
`cellseg.callbacks.pseudo_label_oracle.PseudoLabelOracle` during training (not exported by
`cellseg.callbacks`, so a method importing its callbacks never loads this module).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

MATCH_IOU = 0.5


def matched_ids(a: np.ndarray, b: np.ndarray, iou: float = MATCH_IOU) -> tuple[set[int], set[int]]:
    """Ids of `a` and of `b` (0 and IGNORE excluded) that take part in a pair with IoU > `iou`."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    valid_a, valid_b = (a > 0) & (a != IGNORE), (b > 0) & (b != IGNORE)
    area_a = np.bincount(np.where(valid_a, a, 0).ravel())
    area_b = np.bincount(np.where(valid_b, b, 0).ravel())
    both = valid_a & valid_b
    if not both.any():
        return set(), set()
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    union = area_a[pairs[0]] + area_b[pairs[1]] - inter
    good = inter / union > iou
    return {int(i) for i in pairs[0][good]}, {int(i) for i in pairs[1][good]}


def pseudo_label_quality(pseudo: np.ndarray, gt: np.ndarray, iou: float = MATCH_IOU) -> dict:
    """Counts for one image: accepted / GT instances, matched ones, ignore and false-background pixels."""
    pseudo, gt = np.asarray(pseudo), np.asarray(gt)
    accepted = {int(i) for i in np.unique(pseudo) if 0 < i < IGNORE}
    nuclei = {int(i) for i in np.unique(gt) if i > 0}
    good_pseudo, good_gt = matched_ids(pseudo, gt, iou)
    background = pseudo == 0
    return {
        "accepted": len(accepted),
        "gt": len(nuclei),
        "matched_accepted": len(good_pseudo),
        "matched_gt": len(good_gt),
        "ignore_pixels": int(np.count_nonzero(pseudo == IGNORE)),
        "pixels": int(pseudo.size),
        "false_background_pixels": int(np.count_nonzero(background & (gt > 0))),
        "background_pixels": int(np.count_nonzero(background)),
    }


def pooled_counts(per_image: Iterable[dict]) -> dict[str, int]:
    """Per-image count dicts summed key by key; an empty input is refused."""
    totals: dict[str, int] = {}
    for counts in per_image:
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    if not totals:
        raise ValueError("no image to summarise")
    return totals


def summarise_quality(per_image: Iterable[dict]) -> dict:
    """Pooled precision, coverage, ignore fraction and false-background fraction over images."""
    totals = pooled_counts(per_image)
    return {
        **totals,
        "precision": totals["matched_accepted"] / totals["accepted"] if totals["accepted"] else float("nan"),
        "coverage": totals["matched_gt"] / totals["gt"] if totals["gt"] else float("nan"),
        "ignore_fraction": totals["ignore_pixels"] / totals["pixels"],
        "false_background_fraction": (totals["false_background_pixels"] / totals["background_pixels"]
                                      if totals["background_pixels"] else float("nan")),
    }


def pixel_pseudo_label_counts(foreground_map: np.ndarray, gt: np.ndarray, tau: float) -> dict:
    """Pixel counts of one image's semantic pseudo-labels (S2L): foreground where the map is > tau, background
    where it is < 1 - tau, undecided in between (and where the map is NaN), against the GT foreground."""
    values = np.asarray(foreground_map, dtype=np.float32)
    gt_fg = np.asarray(gt) > 0
    if values.shape != gt_fg.shape:
        raise ValueError(f"pseudo-label map is {values.shape} but its GT is {gt_fg.shape}")
    pseudo_fg, pseudo_bg = values > tau, values < 1.0 - tau
    return {
        "pixels": int(values.size),
        "gt_fg": int(np.count_nonzero(gt_fg)),
        "pseudo_fg": int(np.count_nonzero(pseudo_fg)),
        "pseudo_bg": int(np.count_nonzero(pseudo_bg)),
        "pseudo_fg_correct": int(np.count_nonzero(pseudo_fg & gt_fg)),
        "pseudo_bg_correct": int(np.count_nonzero(pseudo_bg & ~gt_fg)),
    }


def summarise_pixel_quality(per_image: Iterable[dict]) -> dict:
    """Pooled pixel precision/recall of foreground and background pseudo-labels and the decided shares."""
    totals = pooled_counts(per_image)
    gt_bg = totals["pixels"] - totals["gt_fg"]

    def ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    return {
        "fg_share": ratio(totals["pseudo_fg"], totals["pixels"]),
        "bg_share": ratio(totals["pseudo_bg"], totals["pixels"]),
        "undecided_share": ratio(totals["pixels"] - totals["pseudo_fg"] - totals["pseudo_bg"], totals["pixels"]),
        "fg_precision": ratio(totals["pseudo_fg_correct"], totals["pseudo_fg"]),
        "fg_recall": ratio(totals["pseudo_fg_correct"], totals["gt_fg"]),
        "bg_precision": ratio(totals["pseudo_bg_correct"], totals["pseudo_bg"]),
        "bg_recall": ratio(totals["pseudo_bg_correct"], gt_bg),
    }
