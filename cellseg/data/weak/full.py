"""Full supervision: the training targets are the ground-truth instance maps themselves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from cellseg.data.layout import SplitLayout
from cellseg.data.weak.base import WeakLabels


class FullLabels(WeakLabels):
    """The supervised upper bound: no cache, `prepare` returns the split's GT label paths."""

    kind: ClassVar[str] = "full"
    target_format: ClassVar[str] = "instance"
    reads_ground_truth: ClassVar[bool] = True

    def prepare(self, layout: SplitLayout, ids: Sequence[str]) -> dict[str, Path]:
        return {image_id: layout.label_path(image_id) for image_id in ids}
