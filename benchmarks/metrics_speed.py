"""Speed of the table-based metrics against the per-instance-mask reference on the 14 MoNuSeg test images.

For each GT label map a deterministic perturbed prediction is built (shift, erosion, merged neighbours, dropped
and split objects); all clean metrics are computed by `cellseg.metrics.instance_metrics` (best of --repeats) and
by `cellseg.metrics.reference.reference_metrics` (one run, HoVer-Net style per-instance masks). Prints per-image
and total timings, the speed ratio (goal >= 50x) and the largest absolute difference over all metric values.

    python benchmarks/metrics_speed.py [--data-root ../shared/data] [--limit 14] [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the budget of docs/metrics.md#speed says
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from cellseg.metrics import CLEAN_METRICS, instance_metrics  # noqa: E402
from cellseg.metrics.reference import reference_metrics  # noqa: E402
from cellseg.utils.hashing import stable_seed  # noqa: E402
from cellseg.utils.io import read_label  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 50.0
GOAL_MS = 100.0


def perturb(gt: np.ndarray, seed: int) -> np.ndarray:
    """Shift by (2, 3), erode by 1 px, merge 20% of touching pairs, drop 5% and split 5% of the objects."""
    rng = np.random.default_rng(seed)
    pred = np.zeros_like(gt)
    pred[2:, 3:] = gt[:-2, :-3]
    pairs = touching_pairs(pred)
    same = ndi.minimum_filter(pred, 3) == ndi.maximum_filter(pred, 3)
    pred = np.where(same, pred, 0)
    lut = np.arange(int(pred.max()) + 1)
    for keep, absorbed in pairs[rng.random(len(pairs)) < 0.2]:
        lut[lut == lut[absorbed]] = lut[keep]
    pred = lut[pred]
    ids = np.unique(pred)[1:]
    pred[np.isin(pred, rng.choice(ids, size=len(ids) // 20, replace=False))] = 0
    next_id = int(pred.max()) + 1
    for object_id in rng.choice(np.unique(pred)[1:], size=len(ids) // 20, replace=False):
        rows, cols = np.nonzero(pred == object_id)
        left_part = cols < cols.mean()
        pred[rows[left_part], cols[left_part]] = next_id
        next_id += 1
    return pred


def touching_pairs(label: np.ndarray) -> np.ndarray:
    """(a, b) id pairs of objects that touch horizontally or vertically."""
    found = []
    for a, b in ((label[:, :-1], label[:, 1:]), (label[:-1, :], label[1:, :])):
        touching = (a != b) & (a > 0) & (b > 0)
        found.append(np.stack([a[touching], b[touching]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def best_time(function, repeats: int) -> tuple[float, dict]:
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def max_abs_difference(fast: dict, reference: dict) -> float:
    worst = 0.0
    for name in CLEAN_METRICS:
        a, b = fast[name], reference[name]
        if math.isnan(a) or math.isnan(b):
            worst = worst if math.isnan(a) and math.isnan(b) else math.inf
        else:
            worst = max(worst, abs(a - b))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=14, help="number of test images (default: all 14)")
    parser.add_argument("--repeats", type=int, default=5, help="fast-path runs per image (best is kept)")
    args = parser.parse_args()
    labels_dir = args.data_root / "MoNuSeg" / "test" / "labels"
    paths = sorted(labels_dir.glob("*.png"))[: args.limit]
    if not paths:
        raise FileNotFoundError(f"no MoNuSeg test labels in {labels_dir}; pass --data-root")

    print(f"{'image':<26}{'GT':>5}{'pred':>6}{'fast ms':>10}{'ref s':>9}{'ratio':>8}{'max |diff|':>12}")
    total_fast = total_ref = 0.0
    worst = 0.0
    for path in paths:
        gt = read_label(path)
        pred = perturb(gt, stable_seed("metrics_speed", path.stem) % 2**32)
        instance_metrics(gt[:64, :64], pred[:64, :64])  # warm-up
        fast_s, fast = best_time(lambda gt=gt, pred=pred: instance_metrics(gt, pred), args.repeats)
        ref_s, ref = best_time(lambda gt=gt, pred=pred: reference_metrics(gt, pred), 1)
        diff = max_abs_difference(fast, ref)
        total_fast, total_ref, worst = total_fast + fast_s, total_ref + ref_s, max(worst, diff)
        n_gt, n_pred = len(np.unique(gt)) - 1, len(np.unique(pred)) - 1
        print(f"{path.stem:<26}{n_gt:>5}{n_pred:>6}{fast_s * 1e3:>10.1f}{ref_s:>9.2f}{ref_s / fast_s:>8.0f}"
              f"{diff:>12.2e}")
    ratio = total_ref / total_fast
    mean_ms = total_fast / len(paths) * 1e3
    print(f"total: fast {total_fast:.3f} s ({mean_ms:.1f} ms/image), reference {total_ref:.1f} s, "
          f"ratio {ratio:.0f}x (goal >= {GOAL_RATIO:.0f}x), max |diff| {worst:.2e}")
    print(f"goals: ratio {'met' if ratio >= GOAL_RATIO else 'NOT met'}, "
          f"< {GOAL_MS:.0f} ms/image {'met' if mean_ms < GOAL_MS else 'NOT met'}")


if __name__ == "__main__":
    main()
