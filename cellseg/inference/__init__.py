"""Inference utilities: tiled dense prediction and instance writers (TIFF, QuPath GeoJSON, CSV)."""

from cellseg.inference.tiler import TileGrid, predict_tiled, taper_window, tile_grid
from cellseg.inference.writers import (
    instance_geometry,
    instances_table,
    instances_to_geojson,
    write_geojson,
    write_instance_tiff,
    write_instances_csv,
)

__all__ = [
    "TileGrid",
    "instance_geometry",
    "instances_table",
    "instances_to_geojson",
    "predict_tiled",
    "taper_window",
    "tile_grid",
    "write_geojson",
    "write_instance_tiff",
    "write_instances_csv",
]
