"""Annotation-free training (COIN): no training target at all; the training GT is never opened."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from cellseg.data.layout import SplitLayout
from cellseg.data.weak.base import WeakLabels


class NoLabels(WeakLabels):
    """`prepare` returns {} without touching the labels folder (it may be absent or unreadable)."""

    kind: ClassVar[str] = "annotation_free"
    target_format: ClassVar[str] = "none"
    reads_ground_truth: ClassVar[bool] = False

    def prepare(self, layout: SplitLayout, ids: Sequence[str]) -> dict[str, Path]:
        return {}
