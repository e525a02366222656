"""Post-processing shared by the methods: semantic masks and three-class maps to instance label maps."""

from cellseg.postproc.instances import (
    clean_instances,
    connected_components,
    fill_instance_holes,
    remove_small_instances,
    semantic_to_instance,
    watershed_instances,
)
from cellseg.postproc.three_class import decode_three_class, three_class_targets

__all__ = [
    "clean_instances",
    "connected_components",
    "decode_three_class",
    "fill_instance_holes",
    "remove_small_instances",
    "semantic_to_instance",
    "three_class_targets",
    "watershed_instances",
]
