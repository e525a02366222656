"""Where a run's instance errors lie on H&E, and what a hematoxylin filter at test time would change (a diagnostic).

    python benchmarks/instance_errors.py RUN_DIR [RUN_DIR ...] [--images DIR] [--min-shares 0.3 0.5]

Each RUN_DIR is a folder `train.py` tested (its metrics.json names the GT and prediction folders; the images are
read from the GT folder's sibling `images/` unless --images names them). For each run it prints, as predicted and
after dropping every instance less than `min-share` of whose pixels lie above its image's Otsu threshold of the
hematoxylin channel (skimage's colour deconvolution; GT-free): the predicted instances, those matching no GT
instance (best IoU <= 0.5), the share of those lying mostly (> half their pixels) on GT background, and the
per-image means of AJI, PQ and object precision / recall. It reads saved predictions only (seconds per run).
The filter is not part of any method: this script only measures what it would do.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from cellseg.evaluation import evaluate_arrays
from cellseg.metrics.instance import DEFAULT_MATCH_IOU
from cellseg.metrics.table import contingency_table
from cellseg.reporting.tables import fmt, text_table
from cellseg.utils.io import read_image, read_label

METRICS = ("aji", "pq", "precision_obj", "recall_obj")


@dataclass(frozen=True)
class PredictionErrors:
    """Per predicted instance (ascending id): its area, its share on GT foreground and its best IoU with a GT one."""

    area: np.ndarray
    on_gt_foreground: np.ndarray
    best_iou: np.ndarray

    @property
    def unmatched(self) -> np.ndarray:
        return self.best_iou <= DEFAULT_MATCH_IOU


def prediction_errors(gt: np.ndarray, pred: np.ndarray) -> PredictionErrors:
    """Area, share of pixels on GT foreground and best IoU with any GT instance, for every predicted instance."""
    table = contingency_table(gt, pred)
    best_iou = np.zeros(table.n_pred)
    np.maximum.at(best_iou, table.cols, table.iou)  # the metrics' own IoU
    on_foreground = np.bincount(table.cols, weights=table.inter, minlength=table.n_pred)
    return PredictionErrors(table.pred_area, on_foreground / np.maximum(table.pred_area, 1), best_iou)


def hematoxylin_share(image: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """For each predicted id 1..max: the share of its pixels above the image's Otsu threshold of hematoxylin."""
    hematoxylin = rgb2hed(image[..., :3])[..., 0]
    stained = hematoxylin > threshold_otsu(hematoxylin)
    ids = np.arange(1, int(pred.max()) + 1)
    return np.nan_to_num(np.asarray(ndi.mean(stained, labels=pred, index=ids), dtype=float))


def drop_pale_instances(image: np.ndarray, pred: np.ndarray, min_share: float) -> np.ndarray:
    """`pred` without the instances less than `min_share` of whose pixels are hematoxylin-stained."""
    if not pred.any():
        return pred.copy()
    keep = np.concatenate([[False], hematoxylin_share(image, pred) >= min_share])
    return np.where(keep[pred], pred, 0).astype(pred.dtype)


def run_folders(run_dir: Path, images: Path | None) -> tuple[Path, Path, Path]:
    """GT, prediction and image folders of a tested run, from its metrics.json."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise SystemExit(f"{metrics_path} does not exist: expected a run folder that train.py tested")
    metrics = json.loads(metrics_path.read_text())
    gt_dir, pred_dir = Path(metrics["gt_dir"]), Path(metrics["pred_dir"])
    image_dir = images or gt_dir.parent / "images"
    for folder in (gt_dir, pred_dir, image_dir):
        if not folder.is_dir():
            raise SystemExit(f"{folder} (from {metrics_path} or --images) is not a folder")
    return gt_dir, pred_dir, image_dir


def image_of(image_dir: Path, image_id: str) -> np.ndarray:
    matches = sorted(image_dir.glob(f"{image_id}.*"))
    if not matches:
        raise SystemExit(f"no image {image_id}.* in {image_dir}")
    return read_image(matches[0])


def run_rows(run_dir: Path, images: Path | None, min_shares: list[float]) -> list[list[str]]:
    """One table row per filter setting (None: as predicted) of one run."""
    gt_dir, pred_dir, image_dir = run_folders(run_dir, images)
    triples = [(p.stem, read_label(gt_dir / p.name), read_label(p), image_of(image_dir, p.stem))
               for p in sorted(pred_dir.glob("*.png"))]
    rows = []
    for share in [None, *min_shares]:
        pairs = [(i, gt, pred if share is None else drop_pale_instances(image, pred, share))
                 for i, gt, pred, image in triples]
        errors = [prediction_errors(gt, pred) for _, gt, pred in pairs]
        unmatched = np.concatenate([e.unmatched for e in errors])
        on_background = np.concatenate([e.on_gt_foreground[e.unmatched] < 0.5 for e in errors])
        means = evaluate_arrays(pairs, METRICS, progress=False).per_image_mean
        rows.append(["/".join(run_dir.parts[-3:]) if share is None else "", "as predicted" if share is None else f">= {share}",
                     str(unmatched.size), str(int(unmatched.sum())), fmt(on_background.mean(), 3),
                     *(fmt(means[name], 4) for name in METRICS)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders train.py tested")
    parser.add_argument("--images", type=Path, default=None, help="image folder (default: <gt_dir>/../images)")
    parser.add_argument("--min-shares", nargs="*", type=float, default=[0.3, 0.5],
                        help="hematoxylin filter settings to measure (share of stained pixels an instance keeps)")
    args = parser.parse_args()
    header = ["run", "hematoxylin filter", "instances", "unmatched", "of those on GT bg", "AJI", "PQ",
              "obj. precision", "obj. recall"]
    rows = [row for run in args.runs for row in run_rows(run, args.images, args.min_shares)]
    print(text_table(header, rows))


if __name__ == "__main__":
    main()
