"""Weak labels (`supervision=`): full GT, none (annotation-free) and cached, seeded scribbles."""

from __future__ import annotations

from cellseg.data.weak.annotation_free import NoLabels
from cellseg.data.weak.base import WeakLabels, read_mask_uint8
from cellseg.data.weak.cache import CachedWeakLabels
from cellseg.data.weak.full import FullLabels
from cellseg.data.weak.scribble import ScribbleLabels, synthesize_scribble

__all__ = [
    "CachedWeakLabels",
    "FullLabels",
    "NoLabels",
    "ScribbleLabels",
    "WeakLabels",
    "read_mask_uint8",
    "synthesize_scribble",
]
