"""Weak labels (`supervision=`): full GT, none (annotation-free), cached seeded scribbles and cached image-level
tile labels (Cyclic)."""

from __future__ import annotations

from cellseg.data.weak.annotation_free import NoLabels
from cellseg.data.weak.base import WeakLabels, read_mask_uint8
from cellseg.data.weak.cache import CachedWeakLabels
from cellseg.data.weak.full import FullLabels
from cellseg.data.weak.image_level import ImageLevelLabels
from cellseg.data.weak.scribble import ScribbleLabels, synthesize_scribble

__all__ = [
    "CachedWeakLabels",
    "FullLabels",
    "ImageLevelLabels",
    "NoLabels",
    "ScribbleLabels",
    "WeakLabels",
    "read_mask_uint8",
    "synthesize_scribble",
]
