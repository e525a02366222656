"""Evaluation core: label maps in folders (or arrays in memory) -> per-image metrics, summary, metrics.json/CSV.

`evaluate_predictions` checks the whole folder pair first (missing, extra, ambiguous and wrong-size predictions
are reported together in one ValueError, before anything is computed or written), then that no prediction looks
like a binary or semantic class map (`class_map_reason`; refused in one ValueError unless `allow_class_maps`),
then reuses `evaluate_arrays`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image
from scipy import ndimage as ndi
from tqdm import tqdm

from cellseg.metrics.aggregate import aggregate, check_metric_names, needs_faithful, split_summary
from cellseg.metrics.instance import DEFAULT_MATCH_IOU, STAT_FIELDS, image_stats
from cellseg.utils.io import LABEL_SUFFIXES, atomic_path, read_label, write_json

IGNORE_SUFFIX = "_ignore"  # <id>_ignore.png beside the GT label: nonzero pixels are excluded (MoNuSAC ambiguous)
METRICS_JSON = "metrics.json"
PER_IMAGE_CSV = "per_image.csv"
# A prediction with at most CLASS_MAP_MAX_IDS distinct nonzero values, one of which covers at least
# CLASS_MAP_MIN_PIECES separate 8-connected regions, is a class map (binary 0/255, semantic 0/1/2 ...), not an
# instance map: an instance map gives each nucleus its own id, so a few ids each spread over many separate
# regions does not happen, while a dense instance map (more ids) never trips, however ragged its instances.
CLASS_MAP_MAX_IDS = 8
CLASS_MAP_MIN_PIECES = 5

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-image table (index = image id; metric columns, then the additive sums) and the flat summary."""

    per_image: pd.DataFrame
    summary: dict[str, float]
    metric_names: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)  # gt_dir / pred_dir when read from folders

    @property
    def n_images(self) -> int:
        return int(self.summary["n_images"])

    @property
    def per_image_mean(self) -> dict[str, float]:
        return split_summary(self.summary, self.metric_names)["per_image_mean"]

    @property
    def pooled(self) -> dict[str, float]:
        return split_summary(self.summary, self.metric_names)["pooled"]

    @property
    def n_undefined(self) -> dict[str, int]:
        return split_summary(self.summary, self.metric_names)["n_undefined"]

    def to_json(self) -> dict:
        """The content of metrics.json (NaN written as null)."""
        return _nan_to_none({
            **split_summary(self.summary, self.metric_names),
            "n_images": self.n_images,
            "gt_dir": self.sources.get("gt_dir"),
            "pred_dir": self.sources.get("pred_dir"),
        })


def evaluate_arrays(pairs: Iterable[tuple], metric_names: Iterable[str] | None = None, *,
                    match_iou: float = DEFAULT_MATCH_IOU, total: int | None = None,
                    progress: bool = True) -> EvalResult:
    """Evaluate in-memory (id, gt, pred) or (id, gt, pred, ignore_mask) tuples, one image at a time."""
    names = check_metric_names(metric_names)
    faithful = needs_faithful(names)
    ids, stats = [], []
    for item in tqdm(pairs, total=total, desc="evaluating", unit="image", disable=not progress):
        if len(item) not in (3, 4):
            raise ValueError(f"expected (id, gt, pred) or (id, gt, pred, ignore_mask) tuples; got {len(item)} items")
        image_id, gt, pred = str(item[0]), item[1], item[2]
        ignore = item[3] if len(item) == 4 else None
        if image_id in ids:
            raise ValueError(f"image id '{image_id}' appears twice; expected unique ids")
        try:
            stats.append(image_stats(gt, pred, ignore, match_iou=match_iou, faithful=faithful))
        except ValueError as err:
            raise ValueError(f"image '{image_id}': {err}") from err
        ids.append(image_id)
    rows = [{name: s.values[name] for name in names} | s.sums() for s in stats]
    per_image = pd.DataFrame(rows, index=pd.Index(ids, name="id"), columns=[*names, *STAT_FIELDS])
    return EvalResult(per_image=per_image, summary=aggregate(stats, names), metric_names=names)


def evaluate_predictions(gt_dir: str | Path, pred_dir: str | Path, output_dir: str | Path | None = None,
                         ids: list[str] | None = None, metric_names: Iterable[str] | None = None, *,
                         match_iou: float = DEFAULT_MATCH_IOU, use_ignore: bool = True,
                         progress: bool = True, allow_class_maps: bool = False) -> EvalResult:
    """Evaluate `<id>.png|.tif|.tiff` predictions against the `<id>.png` GT label maps of `gt_dir`.

    Writes metrics.json and per_image.csv into `output_dir` when given. With `use_ignore`, a `<id>_ignore.png`
    beside a GT label excludes its nonzero pixels from both maps. Predictions that look like binary or semantic
    class maps (`class_map_reason`) raise one ValueError naming them all, before anything is computed or
    written; `allow_class_maps` scores them anyway, with a warning.
    """
    names = check_metric_names(metric_names)
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_files, pred_files = _label_files(gt_dir, "GT"), _label_files(pred_dir, "prediction")
    selected = sorted(s for s in gt_files if not s.endswith(IGNORE_SUFFIX)) if ids is None else list(ids)
    ignore_files = {i: gt_files[i + IGNORE_SUFFIX][0] for i in selected if use_ignore and i + IGNORE_SUFFIX in gt_files}
    _check_folders(gt_dir, pred_dir, gt_files, pred_files, selected, ignore_files)
    _check_instance_maps(pred_dir, [pred_files[i][0] for i in selected], allow_class_maps)

    def pairs():
        for image_id in selected:
            item = (image_id, read_label(gt_files[image_id][0]), read_label(pred_files[image_id][0]))
            if image_id in ignore_files:
                item += (read_label(ignore_files[image_id]) > 0,)
            yield item

    result = evaluate_arrays(pairs(), names, match_iou=match_iou, total=len(selected), progress=progress)
    result.sources = {"gt_dir": str(gt_dir), "pred_dir": str(pred_dir)}
    if output_dir is not None:
        write_results(result, output_dir)
    return result


def write_results(result: EvalResult, output_dir: str | Path) -> None:
    """metrics.json and per_image.csv, each written atomically."""
    output_dir = Path(output_dir)
    write_json(output_dir / METRICS_JSON, result.to_json())
    with atomic_path(output_dir / PER_IMAGE_CSV) as tmp:
        result.per_image.to_csv(tmp, index_label="id")


def format_table(result: EvalResult) -> str:
    """Compact text table: one row per metric; per-image mean, pooled value, undefined images."""
    lines = [f"{'metric':<20}{'per-image':>11}{'pooled':>11}{'undefined':>11}"]
    pooled, n_undefined = result.pooled, result.n_undefined
    for name, mean in result.per_image_mean.items():
        lines.append(f"{name:<20}{_fmt(mean):>11}{_fmt(pooled.get(name)):>11}{n_undefined[name]:>11d}")
    lines.append(f"images: {result.n_images}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.4f}"


def _label_files(folder: Path, what: str) -> dict[str, list[Path]]:
    """Label files of a folder by stem (several files may share a stem: reported as ambiguous)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in LABEL_SUFFIXES:
            files.setdefault(path.stem, []).append(path)
    return files


def _check_folders(gt_dir: Path, pred_dir: Path, gt_files: Mapping[str, list[Path]],
                   pred_files: Mapping[str, list[Path]], selected: list[str],
                   ignore_files: Mapping[str, Path]) -> None:
    """Collect every problem of the folder pair and raise them together (nothing has been computed yet)."""
    problems = []
    no_gt = [i for i in selected if i not in gt_files]
    if no_gt:
        problems.append(f"requested ids without GT in {gt_dir}: {no_gt}")
    ambiguous = sorted(str(p) for files in (gt_files, pred_files) for paths in files.values() if len(paths) > 1
                       for p in paths)
    if ambiguous:
        problems.append(f"several label files share an id (keep one): {ambiguous}")
    missing = [gt_files[i][0].name for i in selected if i in gt_files and i not in pred_files]
    if missing:
        problems.append(f"missing predictions in {pred_dir} (no <id>.png/.tif/.tiff) for the GT files: {missing}")
    extra = sorted(p.name for stem, paths in pred_files.items() if stem not in gt_files for p in paths)
    if extra:
        problems.append(f"extra predictions in {pred_dir} with no GT in {gt_dir}: {extra}")
    mismatched = []
    for image_id in selected:
        if image_id not in gt_files or image_id not in pred_files:
            continue
        gt_shape = _header_shape(gt_files[image_id][0])
        for other in (pred_files[image_id][0], ignore_files.get(image_id)):
            if other is not None and (shape := _header_shape(other)) != gt_shape:
                mismatched.append(f"{other.name} is {_hw(shape)} but GT {gt_files[image_id][0].name} is {_hw(gt_shape)}")
    if mismatched:
        problems.append("size mismatches: " + "; ".join(mismatched))
    if problems:
        raise ValueError("cannot evaluate:\n- " + "\n- ".join(problems))


def class_map_reason(label: np.ndarray) -> str | None:
    """Why `label` looks like a binary or semantic class map rather than an instance map, or None.

    The rule: at most CLASS_MAP_MAX_IDS distinct nonzero values, one of them covering at least
    CLASS_MAP_MIN_PIECES separate 8-connected regions. An empty map, or one whose instances are in one or a
    few pieces each, passes.
    """
    top = int(label.max()) if label.size else 0
    values = np.flatnonzero(np.bincount(label.ravel())) if top < 1 << 20 else np.unique(label)  # bincount: faster
    values = values[values != 0]
    if not 0 < len(values) <= CLASS_MAP_MAX_IDS:
        return None
    pieces = {int(v): ndi.label(label == v, structure=np.ones((3, 3), bool))[1] for v in values}
    if max(pieces.values()) < CLASS_MAP_MIN_PIECES:
        return None
    found = ", ".join(f"{value} in {n} separate regions" for value, n in pieces.items())
    return f"{len(values)} nonzero value{'s' if len(values) > 1 else ''} ({found})"


def _check_instance_maps(pred_dir: Path, paths: list[Path], allow_class_maps: bool) -> None:
    """Refuse (or, with `allow_class_maps`, warn about) predictions that look like class maps, all at once."""
    found = [f"{path.name}: {reason}" for path in paths if (reason := class_map_reason(read_label(path)))]
    if not found:
        return
    what = (f"{len(found)} predictions in {pred_dir} look like binary or semantic class maps, not instance maps "
            f"(each nucleus its own id): " + "; ".join(found))
    if allow_class_maps:
        log.warning("%s. Scoring them as they are (allow_class_maps=true): each value counts as one instance.", what)
        return
    raise ValueError(f"cannot evaluate: {what}. Label their connected components (or the instances of your method) "
                     "first, or pass allow_class_maps=true to score them as they are.")


def _header_shape(path: Path) -> tuple[int, ...]:
    """(H, W) from the file header only."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                return tuple(int(n) for n in tif.pages[0].shape[:2])
        with Image.open(path) as img:
            width, height = img.size
            return (height, width)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the header of {path}: {err}") from err


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {key: _nan_to_none(value) for key, value in obj.items()}
    if isinstance(obj, (float, np.floating)) and math.isnan(obj):
        return None
    return obj
