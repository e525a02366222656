"""Pyramidal TIFF writing (tifffile): tiled levels at downsamples 1, 2, 4, ... with the resolution recorded.

`layout="generic"` stores the levels as successive pages, the layout OpenSlide reads as a generic tiled TIFF and
tiffslide reads too; `layout="ome"` writes an OME-TIFF with the reduced levels as SubIFDs and the physical pixel
size in the OME metadata. Used for synthetic slides (tests, benchmarks) and pyramidal label outputs.
"""

from __future__ import annotations

import os

import numpy as np
import tifffile

from cellseg.inference.writers import UM_PER_CM
from cellseg.utils.io import atomic_path

LAYOUTS = ("generic", "ome")


def write_pyramidal_tiff(path: str | os.PathLike, image: np.ndarray, mpp: float, levels: int = 3, tile: int = 256,
                         compression: str = "zlib", layout: str = "generic") -> None:
    """Write `image` (H x W x 3 uint8 RGB, or H x W labels; a numpy memmap keeps memory bounded) atomically as a
    pyramid of `levels` levels (nearest-neighbour downsampling by 2), level 0 at `mpp` µm per pixel."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
    if not mpp > 0 or levels < 1 or tile % 16:
        raise ValueError(f"mpp={mpp}, levels={levels}, tile={tile}; expected mpp > 0, levels >= 1, tile a multiple of 16")
    photometric = "rgb" if image.ndim == 3 else "minisblack"
    options = {"tile": (tile, tile), "photometric": photometric, "compression": compression}
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=layout == "ome") as tif:
        for level in range(levels):
            factor = 2**level
            data = image[::factor, ::factor]
            if layout == "ome":
                extra = ({"subifds": levels - 1, "metadata": {"axes": "YXS" if image.ndim == 3 else "YX",
                                                              "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}}
                         if level == 0 else {"subfiletype": 1})
            else:
                resolution = UM_PER_CM / (mpp * factor)
                extra = {"subfiletype": 0 if level == 0 else 1, "resolution": (resolution, resolution),
                         "resolutionunit": "CENTIMETER", "metadata": None}
            tif.write(data, **options, **extra)
