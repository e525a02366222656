"""The contingency table of a GT and a predicted instance map (docs/metrics.md#contingency-table).

Every metric of an image is derived from this one table: no per-instance full-size mask is ever built.
Overlap cells are kept sparse (row, column, count) so that the matching code never looks at empty cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUT_MAX_ID = 2**24  # above this id a lookup table would be too large: fall back to np.unique
DENSE_MAX_CELLS = 10**7  # above (Ng+1)(Np+1) cells the table is built sparse (np.unique on pair keys)
IOU_EPS = 1.0e-6  # HoVer-Net's epsilon in IoU = I / (U + eps), used for matching and SQ


@dataclass(frozen=True)
class ContingencyTable:
    """Areas and nonzero overlaps of GT instances i = 0..Ng-1 and predicted instances j = 0..Np-1.

    Instance indices are 0-based positions in the ascending list of original ids (`gt_ids`, `pred_ids`); the
    background row and column of the full table are summarised by `bg` (C_00) and `n_px` (pixels counted).
    Overlap cells are sorted by row, then column.
    """

    gt_ids: np.ndarray  # (Ng,) original ids, ascending
    pred_ids: np.ndarray  # (Np,)
    gt_area: np.ndarray  # (Ng,) int64, a_i
    pred_area: np.ndarray  # (Np,) int64, b_j
    rows: np.ndarray  # (K,) int64, GT index of each overlapping pair
    cols: np.ndarray  # (K,) int64, predicted index of each overlapping pair
    inter: np.ndarray  # (K,) int64, I_ij > 0
    bg: int  # C_00: pixels that are background in both maps
    n_px: int  # N: pixels counted (ignored pixels excluded)

    @property
    def n_gt(self) -> int:
        return int(self.gt_area.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_area.size)

    @property
    def union(self) -> np.ndarray:
        """U_ij = a_i + b_j - I_ij of every overlapping pair."""
        return self.gt_area[self.rows] + self.pred_area[self.cols] - self.inter

    @property
    def iou(self) -> np.ndarray:
        """IoU_ij = I_ij / (U_ij + 1e-6) of every overlapping pair (HoVer-Net's formula)."""
        return self.inter / (self.union + IOU_EPS)

    @property
    def tp_px(self) -> int:
        """Pixels that are foreground in both maps."""
        return int(self.inter.sum())


def check_label_pair(gt, pred, ignore_mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate two instance maps (and an optional ignore mask) of one image; one clear ValueError otherwise."""
    gt = as_label_array(gt, "GT")
    pred = as_label_array(pred, "prediction")
    if gt.shape != pred.shape:
        raise ValueError(f"GT has shape {gt.shape} but prediction has shape {pred.shape}; expected equal shapes")
    if ignore_mask is not None:
        ignore_mask = np.asarray(ignore_mask)
        if ignore_mask.shape != gt.shape:
            raise ValueError(f"ignore mask has shape {ignore_mask.shape}; expected the label shape {gt.shape}")
        ignore_mask = ignore_mask.astype(bool, copy=False)
    return gt, pred, ignore_mask


def as_label_array(label, what: str = "label map") -> np.ndarray:
    """A 2-D non-negative integer (or bool) array; anything else raises one ValueError naming `what`."""
    array = np.asarray(label)
    if array.ndim != 2:
        raise ValueError(f"{what} has shape {array.shape}; expected a 2-D H x W instance map")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} has dtype {array.dtype}; expected an integer instance map (0 = background)")
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
        raise ValueError(f"{what} has negative ids; expected 0 = background and positive instance ids")
    return array


def relabel(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ids to 0..N keeping their ascending order (0 stays background), as HoVer-Net `remap_label`.

    Returns (relabelled values as intp, original ids of 1..N). Uses a lookup table built from `bincount`
    presence when the largest id is <= 2**24 (no sort), else `np.unique(return_inverse=True)`.
    """
    if flat.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.int64)
    top = int(flat.max())
    if top <= LUT_MAX_ID:
        if not np.can_cast(flat.dtype, np.intp):
            flat = flat.astype(np.intp)  # uint64 input: values are small here, the cast is exact
        present = np.bincount(flat, minlength=1) > 0
        present[0] = True  # background keeps index 0 even when the map has no background pixel
        ids = np.flatnonzero(present)[1:].astype(np.int64)
        if ids.size == top:  # ids are already 1..N: the lookup table would be the identity
            return flat.astype(np.intp, copy=False), ids
        lut = np.cumsum(present, dtype=np.intp) - 1
        return np.take(lut, flat), ids
    ids, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.intp, copy=False)
    if ids[0] != 0:
        inverse += 1
        return inverse, ids.astype(np.int64)
    return inverse, ids[1:].astype(np.int64)


def contingency_table(gt, pred, ignore_mask=None, dense_max_cells: int | None = None) -> ContingencyTable:
    """Build the table of one image; pixels where `ignore_mask` is True are removed from both maps.

    The table is dense (one `bincount`) up to `dense_max_cells` cells (default `DENSE_MAX_CELLS`), else sparse.
    """
    dense_max_cells = DENSE_MAX_CELLS if dense_max_cells is None else dense_max_cells
    gt, pred, ignore_mask = check_label_pair(gt, pred, ignore_mask)
    if ignore_mask is not None:
        keep = ~ignore_mask
        gt_flat, pred_flat = gt[keep], pred[keep]
    else:
        gt_flat, pred_flat = gt.reshape(-1), pred.reshape(-1)
    g, gt_ids = relabel(gt_flat)
    p, pred_ids = relabel(pred_flat)
    n_gt, n_pred = gt_ids.size, pred_ids.size
    width = n_pred + 1
    if (n_gt + 1) * width <= dense_max_cells:
        table = np.bincount(g * width + p, minlength=(n_gt + 1) * width).reshape(n_gt + 1, width)
        gt_area = table[1:].sum(axis=1)
        pred_area = table[:, 1:].sum(axis=0)
        rows, cols = np.nonzero(table[1:, 1:])
        inter = table[1:, 1:][rows, cols]
        bg = int(table[0, 0])
    else:
        gt_area = np.bincount(g, minlength=n_gt + 1)[1:]
        pred_area = np.bincount(p, minlength=n_pred + 1)[1:]
        both = (g > 0) & (p > 0)
        keys, inter = np.unique(g[both] * width + p[both], return_counts=True)
        rows, cols = keys // width - 1, keys % width - 1
        bg = int(np.count_nonzero((g == 0) & (p == 0)))
    return ContingencyTable(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_area=gt_area.astype(np.int64),
        pred_area=pred_area.astype(np.int64),
        rows=rows.astype(np.int64),
        cols=cols.astype(np.int64),
        inter=inter.astype(np.int64),
        bg=bg,
        n_px=int(g.size),
    )
