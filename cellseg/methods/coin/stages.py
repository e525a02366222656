"""Per-image work of COIN stages 0-2 (steps A1-A5 of docs/methods/coin.md#step-labels), independent of where results are stored.

Stage 0: `ucis_instances` (classical or folder). Stage 1: a feature source (`handcrafted` or `vit`) yields
L2-normalised features block by block; `add_foreground` accumulates the global foreground prototype (pass 1),
`image_heatmaps` + `propagate_mask` give the binary mask S (pass 2). Stage 2: `binary_to_instances` (A4),
a prompter (`classical` or `sam`), `instance_scores`, `thresholds_for` (per image or per dataset),
`paint_pseudo_label` and, across rounds, `accumulate_confident`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from cellseg.methods.coin.features import RunningChannelStats, handcrafted_features, normalise_features
from cellseg.methods.coin.prompter import (
    ClassicalPrompter,
    PromptedMask,
    centroid_point,
    interior_point,
    prompt_masks,
)
from cellseg.methods.coin.prototypes import PrototypeAccumulator, cosine_heatmaps
from cellseg.methods.coin.refine import refine_with_ot
from cellseg.methods.coin.scoring import IGNORE, threshold
from cellseg.methods.coin.ucis import classical_ucis, read_ucis_folder
from cellseg.methods.coin.vit_features import VitFeatureExtractor, WindowTokens
from cellseg.models import sam as sam_models
from cellseg.utils.io import atomic_path

log = logging.getLogger(__name__)

UCIS_KINDS = ("classical", "folder")
FEATURE_KINDS = ("handcrafted", "vit")
PROMPTER_KINDS = ("classical", "sam")
SCOPES = ("image", "dataset")
ACCUMULATE_IOU = 0.5

Block = tuple[slice, slice, np.ndarray]


# ----------------------------------------------------------------------------------------------- stage 0
def ucis_instances(image_rgb: np.ndarray, image_id: str, ucis: Mapping) -> np.ndarray:
    """U (int32, 0 = background) of one image from `method.ucis` (classical recipe or a folder of predictions)."""
    kind = ucis.get("kind", "classical")
    if kind == "classical":
        return classical_ucis(image_rgb, stain=ucis.get("stain", "auto"), threshold=ucis.get("threshold", "otsu"),
                              min_area=int(ucis.get("min_area", 30)), max_hole=int(ucis.get("max_hole", 100)),
                              peak_min_distance=int(ucis.get("peak_min_distance", 4)))
    if kind == "folder":
        if not ucis.get("dir"):
            raise ValueError("method.ucis.kind=folder needs method.ucis.dir (a folder of <image id>.png predictions)")
        instances = read_ucis_folder(ucis["dir"], image_id, ucis.get("format", "auto"))
        if instances.shape != image_rgb.shape[:2]:
            raise ValueError(f"UCIS prediction {Path(ucis['dir']) / image_id}.png is {instances.shape}; "
                             f"expected the image size {image_rgb.shape[:2]}")
        return instances
    raise ValueError(f"unknown method.ucis.kind {kind!r}; expected one of {UCIS_KINDS}")


# ----------------------------------------------------------------------------------------------- stage 1
@dataclass
class ImageFeatures:
    """Normalised features of one image, per zoom, produced block by block (`blocks(zoom_index)`)."""

    n_zooms: int
    blocks: Callable[[int], Iterator[Block]]
    tokens: list[WindowTokens] | None = None  # ViT only: what `features.cache: tokens` stores


class HandcraftedSource:
    """`features: handcrafted`: 21 channels z-scored with training statistics (pass 0), L2-normalised per pixel."""

    kind = "handcrafted"
    needs_stats = True

    def __init__(self, stain: str = "auto") -> None:
        self.stain = stain
        self.stats: RunningChannelStats | None = None

    @property
    def dim(self) -> int:
        return int(len(self.stats.mean)) if self.stats is not None else 21

    def update_stats(self, image_rgb: np.ndarray) -> None:
        feats = handcrafted_features(image_rgb, stain=self.stain)
        self.stats = self.stats or RunningChannelStats(feats.shape[0])
        self.stats.update(feats)

    def state_dict(self) -> dict:
        return {"stats": self.stats.state_dict() if self.stats is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.stats = RunningChannelStats.from_state_dict(state["stats"]) if state.get("stats") else None

    def image_features(self, image_rgb: np.ndarray, tokens: list[WindowTokens] | None = None) -> ImageFeatures:
        if self.stats is None:
            raise RuntimeError("handcrafted features need the training statistics (pass 0) first")
        feats = normalise_features(handcrafted_features(image_rgb, stain=self.stain), self.stats)
        whole = (slice(0, feats.shape[1]), slice(0, feats.shape[2]), feats)
        return ImageFeatures(1, lambda zoom: iter([whole]))


class VitSource:
    """`features: vit`: window token grids of a timm ViT per zoom; dense features rebuilt block by block."""

    kind = "vit"
    needs_stats = False

    def __init__(self, extractor: VitFeatureExtractor) -> None:
        self.extractor = extractor

    @property
    def dim(self) -> int:
        return self.extractor.dim

    def update_stats(self, image_rgb: np.ndarray) -> None:  # nothing to fit
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def image_features(self, image_rgb: np.ndarray, tokens: list[WindowTokens] | None = None) -> ImageFeatures:
        if tokens is None:
            tokens = [self.extractor.window_tokens(image_rgb, zoom) for zoom in self.extractor.zooms]
        return ImageFeatures(len(tokens), lambda zoom: self.extractor.blocks(tokens[zoom]), tokens)


def build_feature_source(features: Mapping, stain: str = "auto") -> HandcraftedSource | VitSource:
    kind = features.get("kind", "handcrafted")
    if kind == "handcrafted":
        return HandcraftedSource(stain)
    if kind == "vit":
        from cellseg.models.vit import build_vit

        model = build_vit(features.get("arch", "vit_base_patch16_224"), weights=features.get("weights"),
                          weights_sha256=features.get("weights_sha256"), **dict(features.get("timm_kwargs") or {}))
        device = features.get("device", "auto")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        extractor = VitFeatureExtractor(
            model, zooms=tuple(features.get("zooms", (6,))), hflip=bool(features.get("hflip", True)),
            scales=tuple(features.get("scales", (1.0,))), layer=int(features.get("layer", 11)),
            block=int(features.get("block", 256)), device=device,
            window_batch=int(features.get("window_batch", 8)),
        )
        return VitSource(extractor)
    raise ValueError(f"unknown method.features.kind {kind!r}; expected one of {FEATURE_KINDS}")


def add_foreground(features: ImageFeatures, ucis: np.ndarray, accumulator: PrototypeAccumulator) -> None:
    """Pass 1: add this image's U > 0 features (every zoom) to the global foreground running sum."""
    for zoom in range(features.n_zooms):
        for rows, cols, feats in features.blocks(zoom):
            accumulator.add(feats, ucis[rows, cols] > 0)


def image_heatmaps(features: ImageFeatures, ucis: np.ndarray, mu_fg: np.ndarray | None) -> np.ndarray | None:
    """Pass 2: raw cosine heatmaps (2, H, W) to mu_bg(I) (U == 0 pixels) and mu_fg, averaged over zooms.

    `mu_fg=None` (refine.accumulate_centroids=false) uses this image's own U > 0 mean per zoom. None when the
    image has no background pixel (or, per image, no foreground pixel)."""
    heat = np.zeros((2, *ucis.shape), dtype=np.float32)
    for zoom in range(features.n_zooms):
        background = foreground = None
        for rows, cols, feats in features.blocks(zoom):
            background = background or PrototypeAccumulator(feats.shape[0])
            background.add(feats, ucis[rows, cols] == 0)
            if mu_fg is None:
                foreground = foreground or PrototypeAccumulator(feats.shape[0])
                foreground.add(feats, ucis[rows, cols] > 0)
        if background.count == 0 or (foreground is not None and foreground.count == 0):
            return None
        centre = mu_fg if mu_fg is not None else foreground.mean
        for rows, cols, feats in features.blocks(zoom):
            heat[:, rows, cols] += cosine_heatmaps(feats, background.mean, centre)
    return heat / features.n_zooms


def refine_kwargs(refine: Mapping) -> dict:
    """`method.refine` -> keyword arguments of `refine_with_ot` (without the image)."""
    ot, crf = refine.get("ot", {}), refine.get("crf", {})
    crf_args = {k: v for k, v in crf.items() if k != "enabled"} if crf.get("enabled") else None
    return dict(eps=float(ot.get("eps", 0.1)), faithful_stop=bool(refine.get("faithful_sinkhorn_stop", True)),
                max_iter=int(ot.get("max_iter", 100)), tol=float(ot.get("tol", 1e-9)),
                backend=ot.get("backend", "native"), log_domain=bool(ot.get("log_domain", False)),
                gamma=float(refine.get("gamma", 1)), ot_enabled=bool(ot.get("enabled", True)),
                no_ot_threshold=float(refine.get("no_ot_threshold", 0.4)), crf=crf_args)


def propagate_mask(image_rgb: np.ndarray, heatmaps: np.ndarray | None, ucis: np.ndarray, refine: Mapping) -> np.ndarray:
    """S (bool H x W) from the heatmaps (A3.3-A3.8); without a prototype for the image S = U > 0."""
    if heatmaps is None:
        log.warning("an image's UCIS map has no background (or foreground) pixel: S = U > 0 for it")
        return ucis > 0
    return refine_with_ot(heatmaps, image_rgb=image_rgb, **refine_kwargs(refine))


# ----------------------------------------------------------------------------------------------- stage 2
def prompt_point(instance_mask: np.ndarray, kind: str) -> tuple[int, int]:
    return interior_point(instance_mask) if kind == "interior" else centroid_point(instance_mask)


class ClassicalPromptSource:
    """`prompter: classical`: a window segmenter grown from one point per instance (docs/methods/coin.md#prompters)."""

    def __init__(self, prompter: Mapping, stain: str = "auto") -> None:
        self.prompt_point = prompter.get("prompt_point", "interior")
        self.stain = stain
        options = {k: prompter[k] for k in ("beta", "bg_percentile", "fg_radius", "rw_mode", "rw_tol",
                                            "chan_vese_iters", "smooth_sigma", "fill_holes") if k in prompter}
        window = prompter.get("window", "auto")
        self.prompter = ClassicalPrompter(method=prompter.get("method", "local_otsu"),
                                          window=window if window == "auto" else int(window), **options)

    def __call__(self, image_rgb: np.ndarray, instances: np.ndarray) -> list[PromptedMask]:
        return prompt_masks(image_rgb, instances, self.prompt_point, self.prompter, self.stain)


class SamPromptSource:
    """`prompter: sam`: segment-anything from a local checkpoint; N x 1 point batches, best predicted IoU."""

    def __init__(self, prompter: Mapping) -> None:
        sam = prompter.get("sam", {})
        device = sam.get("device", "auto")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.predictor = sam_models.build_sam_predictor(sam.get("model_type", "vit_b"), sam.get("weights"),
                                                        device=device, weights_sha256=sam.get("weights_sha256"))
        self.prompt_point = prompter.get("prompt_point", "interior")
        self.batch = int(sam.get("prompt_batch", 64))

    def __call__(self, image_rgb: np.ndarray, instances: np.ndarray) -> list[PromptedMask]:
        ids, points = [], []
        for index, box in enumerate(ndi.find_objects(instances)):
            if box is None:
                continue
            row, col = prompt_point(instances[box] == index + 1, self.prompt_point)
            ids.append(index + 1)
            points.append((box[1].start + col, box[0].start + row))  # SAM takes (x, y)
        results: list[PromptedMask] = []
        for where, masks, _ in sam_models.iter_masks_for_points(self.predictor, image_rgb, np.asarray(points),
                                                                self.batch):
            for instance_id, point, mask in zip(ids[where], points[where], masks, strict=True):
                results.append(crop_mask(instance_id, mask, (point[1], point[0])))
        return results


def crop_mask(instance_id: int, mask: np.ndarray, point: tuple[int, int]) -> PromptedMask:
    """A full-size bool mask as a PromptedMask crop (its bounding box; an empty 1 x 1 crop at the point)."""
    box = ndi.find_objects(mask.astype(np.uint8))
    if not box or box[0] is None:
        return PromptedMask(instance_id, np.zeros((1, 1), dtype=bool), (int(point[0]), int(point[1])))
    rows, cols = box[0]
    return PromptedMask(instance_id, np.ascontiguousarray(mask[rows, cols]), (rows.start, cols.start))


def build_prompt_source(prompter: Mapping, stain: str = "auto") -> ClassicalPromptSource | SamPromptSource:
    kind = prompter.get("kind", "classical")
    if kind == "classical":
        return ClassicalPromptSource(prompter, stain)
    if kind == "sam":
        return SamPromptSource(prompter)
    raise ValueError(f"unknown method.prompter.kind {kind!r}; expected one of {PROMPTER_KINDS}")


def save_prompts(path: str | Path, prompts: list[PromptedMask]) -> None:
    """Prompted mask crops in one compressed npz (ids, offsets, shapes, packed bits), written atomically."""
    shapes = np.array([p.mask.shape for p in prompts], dtype=np.int64).reshape(-1, 2)
    bits = np.concatenate([p.mask.ravel() for p in prompts]) if prompts else np.zeros(0, dtype=bool)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, ids=np.array([p.instance_id for p in prompts], dtype=np.int64),
                            offsets=np.array([p.offset for p in prompts], dtype=np.int64).reshape(-1, 2),
                            shapes=shapes, bits=np.packbits(bits), n_bits=np.int64(bits.size))


def load_prompts(path: str | Path) -> list[PromptedMask]:
    with np.load(path) as data:
        bits = np.unpackbits(data["bits"])[: int(data["n_bits"])].astype(bool)
        prompts, start = [], 0
        for instance_id, offset, shape in zip(data["ids"], data["offsets"], data["shapes"], strict=True):
            size = int(shape[0] * shape[1])
            mask = bits[start:start + size].reshape(int(shape[0]), int(shape[1]))
            prompts.append(PromptedMask(int(instance_id), mask, (int(offset[0]), int(offset[1]))))
            start += size
    return prompts


def thresholds_for(scores_by_image: Mapping[str, Mapping[int, float]], scoring: Mapping) -> dict[str, float]:
    """theta per image: `threshold_scope: image` -> from each image's scores; `dataset` -> one theta from all."""
    scope = scoring.get("threshold_scope", "image")
    if scope not in SCOPES:
        raise ValueError(f"unknown method.scoring.threshold_scope {scope!r}; expected one of {SCOPES}")
    options = dict(strategy=scoring.get("strategy", "mean+std"), cap=float(scoring.get("cap", 0.9)),
                   value=scoring.get("threshold"))
    if scope == "image":
        return {image_id: threshold(scores, **options) for image_id, scores in scores_by_image.items()}
    pooled = [s for scores in scores_by_image.values() for s in scores.values()]
    theta = threshold(pooled, **options)
    return {image_id: theta for image_id in scores_by_image}


def accumulate_confident(previous: np.ndarray, new: np.ndarray, iou: float = ACCUMULATE_IOU) -> np.ndarray:
    """P_t from P_{t-1} and this round's P (`accumulate_confident: true`).

    Earlier accepted instances are all kept (painted last, so they win overlaps; ids 1..K_old); a new accepted
    instance is added only if its IoU with every earlier one is < `iou`; the pixels of a dropped duplicate not
    covered by its earlier instance become ignore. Background and ignore elsewhere follow this round's P.
    """
    if previous.shape != new.shape:
        raise ValueError(f"pseudo labels differ in shape: {previous.shape} vs {new.shape}")
    previous, new = previous.astype(np.int64), new.astype(np.int64)
    best = best_overlap_iou(new, previous)
    new_ids = [int(i) for i in np.unique(new) if 0 < i < IGNORE]
    old_ids = [int(i) for i in np.unique(previous) if 0 < i < IGNORE]
    new_lut = np.zeros(IGNORE + 1, dtype=np.int64)
    new_lut[IGNORE] = IGNORE
    for rank, instance_id in enumerate(new_ids, start=1):
        new_lut[instance_id] = len(old_ids) + rank if best.get(instance_id, 0.0) < iou else IGNORE
    out = new_lut[new]
    old = (previous > 0) & (previous != IGNORE)
    old_lut = np.zeros(IGNORE + 1, dtype=np.int64)
    old_lut[old_ids] = np.arange(1, len(old_ids) + 1)
    out[old] = old_lut[previous[old]]
    return compact_pseudo_ids(out)


def best_overlap_iou(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """For each instance id of `a` (ignore excluded), its highest IoU with an instance of `b`."""
    valid_a, valid_b = (a > 0) & (a != IGNORE), (b > 0) & (b != IGNORE)
    area_a = np.bincount(np.where(valid_a, a, 0).ravel())
    area_b = np.bincount(np.where(valid_b, b, 0).ravel())
    both = valid_a & valid_b
    if not both.any():
        return {}
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    best: dict[int, float] = {}
    for (ia, ib), count in zip(pairs.T, inter, strict=True):
        value = count / (area_a[ia] + area_b[ib] - count)
        best[int(ia)] = max(best.get(int(ia), 0.0), float(value))
    return best


def compact_pseudo_ids(label: np.ndarray) -> np.ndarray:
    """uint16 map with instance ids renumbered 1..K in their order, background 0 and ignore kept."""
    ids = np.unique(label)
    ids = ids[(ids > 0) & (ids != IGNORE)]
    if len(ids) >= IGNORE:
        raise ValueError(f"{len(ids)} instances do not fit a uint16 pseudo label (max {IGNORE - 1})")
    out = np.zeros(label.shape, dtype=np.uint16)
    out[label == IGNORE] = IGNORE
    valid = (label > 0) & (label != IGNORE)
    out[valid] = np.searchsorted(ids, label[valid]) + 1
    return out
