"""Deterministic perturbations of instance label maps, to build predictions with known kinds of errors."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def erode(label: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Remove every pixel whose 3x3 neighbourhood holds another id (objects shrink and separate)."""
    for _ in range(iterations):
        same = ndi.minimum_filter(label, 3) == ndi.maximum_filter(label, 3)
        label = np.where(same, label, 0)
    return label


def dilate(label: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Grow objects into background (the largest neighbouring id wins)."""
    for _ in range(iterations):
        label = np.where(label == 0, ndi.maximum_filter(label, 3), label)
    return label


def shift(label: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate by (dy, dx), filling with background."""
    out = np.zeros_like(label)
    h, w = label.shape
    out[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = \
        label[max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)]
    return out


def ids_of(label: np.ndarray) -> np.ndarray:
    ids = np.unique(label)
    return ids[ids != 0]


def drop(label: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    ids = ids_of(label)
    gone = rng.choice(ids, size=int(fraction * ids.size), replace=False)
    return np.where(np.isin(label, gone), 0, label)


def merge_neighbours(label: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Give a fraction of touching pairs one id (the first of the pair absorbs the second)."""
    pairs = set()
    for a, b in ((label[:, :-1], label[:, 1:]), (label[:-1, :], label[1:, :])):
        touching = (a != b) & (a > 0) & (b > 0)
        pairs.update(zip(a[touching].tolist(), b[touching].tolist(), strict=True))
    pairs = sorted(pairs)
    chosen = rng.choice(len(pairs), size=int(fraction * len(pairs)), replace=False) if pairs else []
    out = label.copy()
    for index in chosen:
        keep, absorbed = pairs[index]
        out[out == absorbed] = out[label == keep][0]
    return out


def split(label: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Cut a fraction of the objects at their centroid column; the left part gets a new id."""
    ids = ids_of(label)
    out = label.copy()
    next_id = int(label.max()) + 1
    for object_id in rng.choice(ids, size=int(fraction * ids.size), replace=False):
        rows, cols = np.nonzero(label == object_id)
        left = cols < cols.mean()
        out[rows[left], cols[left]] = next_id
        next_id += 1
    return out


def add_spurious(label: np.ndarray, rng: np.random.Generator, count: int, radius: int = 4) -> np.ndarray:
    """Paint `count` discs on background pixels with new ids."""
    out = label.copy()
    yy, xx = np.mgrid[: label.shape[0], : label.shape[1]]
    next_id = int(label.max()) + 1
    for _ in range(count):
        cy, cx = rng.integers(0, label.shape[0]), rng.integers(0, label.shape[1])
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (out == 0)
        out[disc] = next_id
        next_id += 1
    return out


def scatter_ids(label: np.ndarray, rng: np.random.Generator, low: int, high: int, dtype=np.int64) -> np.ndarray:
    """Replace ids by distinct random ids in [low, high) (order not preserved, gaps everywhere)."""
    ids = ids_of(label)
    new_ids = rng.choice(np.arange(low, high, dtype=np.int64), size=ids.size, replace=False) if high - low < 10**7 \
        else low + np.unique(rng.integers(0, high - low, size=4 * ids.size))[: ids.size]
    rng.shuffle(new_ids)
    lut = dict(zip(ids.tolist(), new_ids.tolist(), strict=True))
    out = np.zeros(label.shape, dtype)
    for old, new in lut.items():
        out[label == old] = new
    return out


def perturbed_cases(gt: np.ndarray, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, gt, pred) cases covering touching, split, merged, missed, spurious objects and id layouts."""
    rng = np.random.default_rng(seed)
    combo = add_spurious(drop(split(merge_neighbours(erode(shift(gt, 2, 1)), rng, 0.3), rng, 0.1), rng, 0.1), rng, 5)
    cases = [
        ("identical", gt, gt.copy()),
        ("eroded", gt, erode(gt)),
        ("dilated", gt, dilate(gt, 2)),
        ("merged", gt, merge_neighbours(gt, rng, 0.5)),
        ("split", gt, split(gt, rng, 0.3)),
        ("shifted", gt, shift(gt, 3, -2)),
        ("dropped", gt, drop(gt, rng, 0.3)),
        ("spurious", gt, add_spurious(gt, rng, 8)),
        ("combo", gt, combo),
        ("scattered_ids", scatter_ids(gt, rng, 1, 60000, np.uint16), scatter_ids(combo, rng, 5, 50000, np.int32)),
        ("large_ids", scatter_ids(gt, rng, 2**25, 2**40), scatter_ids(combo, rng, 2**30, 2**62, np.uint64)),
    ]
    return cases
