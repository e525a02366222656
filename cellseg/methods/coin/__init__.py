"""COIN (Jo et al., ICCV 2025) pseudo-labelling stages 0-2 (docs/methods/coin.md), each module with its concern.

ucis (stage 0), features / vit_features + prototypes + sinkhorn + refine (stage 1), prompter + scoring (stage 2b);
the semantic -> instance watershed of stage 2a lives in `cellseg.postproc.instances`. The classes of the config
sub-groups live beside their algorithms: `ClassicalUcis`, `FolderUcis` (method/ucis), `HandcraftedFeatures`,
`vit_features.VitFeatures` (method/features; not imported here: it needs torch and timm), `ClassicalPrompter`,
`SamPrompter` (method/prompter).
"""

from __future__ import annotations

from cellseg.methods.coin.features import (
    HandcraftedFeatures,
    RunningChannelStats,
    handcrafted_features,
    normalise_features,
)
from cellseg.methods.coin.prompter import (
    ClassicalPrompter,
    PromptedMask,
    SamPrompter,
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
from cellseg.methods.coin.ucis import (
    ClassicalUcis,
    FolderUcis,
    classical_ucis,
    read_ucis_folder,
    stain_channel,
)

__all__ = [
    "CRF_MISSING",
    "IGNORE",
    "ClassicalPrompter",
    "ClassicalUcis",
    "FolderUcis",
    "HandcraftedFeatures",
    "PromptedMask",
    "PrototypeAccumulator",
    "RunningChannelStats",
    "SamPrompter",
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
