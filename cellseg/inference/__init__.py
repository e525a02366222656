"""Inference utilities: tiled dense prediction, tiled instance stitching and instance writers (TIFF, GeoJSON, CSV)."""

from cellseg.inference.stitching import owned_regions, predict_tiled_instances, relabel_raster
from cellseg.inference.tiler import TileGrid, predict_tiled, predict_tiled_multiscale, taper_window, tile_grid
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
    "owned_regions",
    "predict_tiled",
    "predict_tiled_instances",
    "predict_tiled_multiscale",
    "relabel_raster",
    "taper_window",
    "tile_grid",
    "write_geojson",
    "write_instance_tiff",
    "write_instances_csv",
]
