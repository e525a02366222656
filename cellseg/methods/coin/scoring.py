"""Stage 2b of COIN (docs/methods/coin.md#pseudo-labels): instance confidence scores, per-image threshold, pseudo label P.

P is uint16: 0 = background, 1..K = accepted instances, 65535 = ignore (watershed foreground not accepted).
`thresholds_for` applies `method.scoring.threshold_scope` (theta per image or one for the dataset);
Merging two rounds' pseudo labels (`method.accumulate_confident`) is `cellseg.data.weak.pseudo_instances`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage as ndi

from cellseg.methods.coin.prompter import PromptedMask
from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

IOU_EPS = 1e-5
STRATEGIES = ("mean+std", "mean", "fixed")
PAINT_MODES = ("prompted", "instance")
SCOPES = ("image", "dataset")

PromptedMasks = Mapping[int, PromptedMask | np.ndarray] | Iterable[PromptedMask]


def instance_scores(instances: np.ndarray, prompted_masks: PromptedMasks) -> dict[int, float]:
    """id -> |A ∩ B| / (|A ∪ B| + 1e-5) for every instance A of `instances` and its prompted mask B."""
    prompted = as_prompted_dict(prompted_masks, instances.shape)
    scores = {}
    for index, box in enumerate(ndi.find_objects(instances)):
        if box is None:
            continue
        instance_id = index + 1
        if instance_id not in prompted:
            raise ValueError(f"instance {instance_id} has no prompted mask")
        scores[instance_id] = _iou(instances, instance_id, box, prompted[instance_id])
    return scores


def threshold(scores: Mapping[int, float] | Iterable[float], strategy: str = "mean+std", cap: float = 0.9,
              value: float | None = None) -> float:
    """Per-image acceptance threshold theta (accept s > theta).

    `value` (scoring.threshold) overrides any strategy; `fixed` requires it. `mean` = mean(s),
    `mean+std` = min(mean(s) + std(s), cap) with the population std. No scores -> +inf (nothing accepted).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scoring.strategy {strategy!r}; expected one of {STRATEGIES}")
    if value is not None:
        return float(value)
    if strategy == "fixed":
        raise ValueError("scoring.strategy=fixed needs a value (scoring.threshold)")
    values = np.asarray(list(scores.values() if isinstance(scores, Mapping) else scores), dtype=np.float64)
    if values.size == 0:
        return math.inf
    if strategy == "mean":
        return float(values.mean())
    return float(min(values.mean() + values.std(), cap))


def thresholds_for(
    scores_by_image: Mapping[str, Mapping[int, float]],
    strategy: str = "mean+std",
    cap: float = 0.9,
    value: float | None = None,
    threshold_scope: str = "image",
) -> dict[str, float]:
    """theta per image (`method.scoring`, `value` = its `threshold`): `threshold_scope: image` -> from each image's
    scores; `dataset` -> one theta from all."""
    if threshold_scope not in SCOPES:
        raise ValueError(f"unknown method.scoring.threshold_scope {threshold_scope!r}; expected one of {SCOPES}")
    options = dict(strategy=strategy, cap=float(cap), value=value)
    if threshold_scope == "image":
        return {image_id: threshold(scores, **options) for image_id, scores in scores_by_image.items()}
    pooled = [s for scores in scores_by_image.values() for s in scores.values()]
    theta = threshold(pooled, **options)
    return {image_id: theta for image_id in scores_by_image}


def accepted_ids(scores: Mapping[int, float], theta: float) -> list[int]:
    """Ids with score > theta (strict), in ascending (score, id) order: the painting order."""
    return sorted((i for i, s in scores.items() if s > theta), key=lambda i: (scores[i], i))


def paint_pseudo_label(
    shape: tuple[int, int],
    instances: np.ndarray,
    prompted_masks: PromptedMasks,
    scores: Mapping[int, float],
    theta: float,
    paint: str = "prompted",
) -> np.ndarray:
    """uint16 pseudo label P: instance foreground -> ignore, then accepted instances painted in ascending score
    order (higher score wins overlaps) with their prompted mask (or the instance itself, `paint=instance`),
    ids 1..K in that order; rejected instances stay ignore, everything else is background."""
    if paint not in PAINT_MODES:
        raise ValueError(f"unknown scoring.paint {paint!r}; expected one of {PAINT_MODES}")
    if tuple(instances.shape) != tuple(shape):
        raise ValueError(f"instance map has shape {instances.shape}; expected {tuple(shape)}")
    order = accepted_ids(scores, theta)
    if len(order) >= IGNORE:
        raise ValueError(f"{len(order)} accepted instances do not fit a uint16 pseudo label (max {IGNORE - 1})")
    label = np.zeros(shape, dtype=np.uint16)
    label[instances > 0] = IGNORE
    prompted = as_prompted_dict(prompted_masks, shape) if paint == "prompted" else {}
    boxes = ndi.find_objects(instances)
    for new_id, instance_id in enumerate(order, start=1):
        if paint == "prompted":
            if instance_id not in prompted:
                raise ValueError(f"accepted instance {instance_id} has no prompted mask")
            _paint_crop(label, prompted[instance_id], new_id)
        else:
            box = boxes[instance_id - 1]
            label[box][instances[box] == instance_id] = new_id
    return _compact_ids(label)


def as_prompted_dict(prompted_masks: PromptedMasks, shape: tuple[int, int]) -> dict[int, PromptedMask]:
    """Normalise {id: PromptedMask | full-size bool mask} or an iterable of PromptedMask to {id: PromptedMask}."""
    items = prompted_masks.items() if isinstance(prompted_masks, Mapping) else (
        (p.instance_id, p) for p in prompted_masks)
    out = {}
    for instance_id, mask in items:
        if not isinstance(mask, PromptedMask):
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != tuple(shape):
                raise ValueError(f"prompted mask of instance {instance_id} has shape {mask.shape}; "
                                 f"expected the image's {tuple(shape)} (or a PromptedMask crop)")
            mask = PromptedMask(int(instance_id), mask, (0, 0))
        out[int(instance_id)] = mask
    return out


def _iou(instances: np.ndarray, instance_id: int, box: tuple[slice, slice], prompted: PromptedMask) -> float:
    """IoU computed on the union of the instance's bounding box and the prompted crop."""
    r0, c0 = prompted.offset
    r1, c1 = r0 + prompted.mask.shape[0], c0 + prompted.mask.shape[1]
    top, left = min(box[0].start, r0), min(box[1].start, c0)
    bottom, right = max(box[0].stop, r1), max(box[1].stop, c1)
    a = instances[top:bottom, left:right] == instance_id
    b = np.zeros_like(a)
    b[r0 - top:r1 - top, c0 - left:c1 - left] = prompted.mask
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    return inter / (union + IOU_EPS)


def _paint_crop(label: np.ndarray, prompted: PromptedMask, value: int) -> None:
    r0, c0 = prompted.offset
    view = label[r0:r0 + prompted.mask.shape[0], c0:c0 + prompted.mask.shape[1]]
    view[prompted.mask[: view.shape[0], : view.shape[1]]] = value


def _compact_ids(label: np.ndarray) -> np.ndarray:
    """Renumber instance ids to 1..K keeping their order, if a later mask covered an earlier one entirely."""
    present = np.unique(label)
    ids = present[(present > 0) & (present < IGNORE)]
    if ids.size == 0 or ids[-1] == ids.size:
        return label
    lut = np.zeros(IGNORE + 1, dtype=np.uint16)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint16)
    lut[IGNORE] = IGNORE
    return lut[label]
