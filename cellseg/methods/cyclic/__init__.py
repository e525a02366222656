"""Cyclic learning (Zhou, Wu, Wang et al., IEEE TMI 2023; docs/methods/cyclic.md): a tile classifier trained on
image-level labels gives relevance maps, whose confident blobs become pseudo instances for a Mask R-CNN; the two
tasks share one ResNet backbone by alternation. `pseudo_instances` (relevance -> instances) and
`self_training` (confident detections, the next pseudo set, the stopping rule) are pure numpy.
"""
