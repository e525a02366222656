"""The two networks of Cyclic learning (docs/methods/cyclic.md): a tile classifier and a Mask R-CNN that share
one ResNet trunk by alternation, copied from one to the other at every hand-over (no joint loss).

One module holds both, so every checkpoint of the method (classifier or detector stage) carries the whole state
the next stage starts from, and `infer.py` rebuilds it from the run config like any other model.
"""

from __future__ import annotations

from torch import nn

from cellseg.models.cam_classifier import TileClassifier
from cellseg.models.mask_rcnn import copy_detector_to_trunk, copy_trunk_to_detector


class CyclicNetworks(nn.Module):
    """`classifier` (TileClassifier: trunk + GAP head, relevance maps) and `detector` (torchvision MaskRCNN
    whose `backbone.body` has the trunk's layout)."""

    def __init__(self, classifier: TileClassifier, detector: nn.Module) -> None:
        super().__init__()
        self.classifier, self.detector = classifier, detector
        # what each builder left trainable (e.g. torchvision's trainable_backbone_layers), restored by train_only
        self._trainable = {name: p.requires_grad for name, p in self.named_parameters()}

    def trunk_to_detector(self) -> None:
        """classifier trunk -> detector `backbone.body` (convolutions and BatchNorm statistics)."""
        copy_trunk_to_detector(self.classifier, self.detector)

    def detector_to_trunk(self) -> None:
        """detector `backbone.body` -> classifier trunk."""
        copy_detector_to_trunk(self.detector, self.classifier)

    def train_only(self, part: str) -> None:
        """Gradients for `part` ("classifier" | "detector") only: the other network is not in the graph, and DDP
        refuses parameters that require a gradient but never receive one."""
        if part not in ("classifier", "detector"):
            raise ValueError(f"part={part!r}; expected 'classifier' or 'detector'")
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith(f"{part}.") and self._trainable[name])
