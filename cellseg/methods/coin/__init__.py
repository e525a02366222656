"""COIN (Jo et al., ICCV 2025) pseudo-labelling stages 0-2 as pure functions (docs/methods/coin.md).

ucis (stage 0), features + prototypes + sinkhorn + refine (stage 1), prompter + scoring (stage 2b); the
semantic -> instance watershed of stage 2a lives in `cellseg.postproc.instances`.
"""

from __future__ import annotations

from cellseg.methods.coin.features import RunningChannelStats, handcrafted_features, normalise_features
from cellseg.methods.coin.prompter import (
    ClassicalPrompter,
    PromptedMask,
    centroid_point,
    interior_point,
    median_radius,
    prompt_masks,
)
from cellseg.methods.coin.prototypes import (
    PrototypeAccumulator,
    background_prototype,
    cosine_heatmaps,
    normalise_heatmaps,
)
from cellseg.methods.coin.refine import CRF_MISSING, crf_refine, ot_reweight, refine_with_ot
from cellseg.methods.coin.scoring import IGNORE, instance_scores, paint_pseudo_label, threshold
from cellseg.methods.coin.sinkhorn import transport_plan
from cellseg.methods.coin.ucis import classical_ucis, read_ucis_folder, stain_channel

__all__ = [
    "CRF_MISSING",
    "IGNORE",
    "ClassicalPrompter",
    "PromptedMask",
    "PrototypeAccumulator",
    "RunningChannelStats",
    "background_prototype",
    "centroid_point",
    "classical_ucis",
    "cosine_heatmaps",
    "crf_refine",
    "handcrafted_features",
    "instance_scores",
    "interior_point",
    "median_radius",
    "normalise_features",
    "normalise_heatmaps",
    "ot_reweight",
    "paint_pseudo_label",
    "prompt_masks",
    "read_ucis_folder",
    "refine_with_ot",
    "stain_channel",
    "threshold",
    "transport_plan",
]
