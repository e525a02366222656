"""Whole-slide images read at a chosen resolution through the field's readers (docs/framework.md#whole-slide-inference).

Backends share OpenSlide's API (`dimensions`, `level_downsamples`, `read_region`, `properties`): OpenSlide
(`openslide-python` with `openslide-bin`) for vendor formats (NDPI, MRXS, SCN, BIF, ...) and tiffslide (on
tifffile) for SVS, pyramidal TIFF and OME-TIFF. `backend="auto"` takes tiffslide for `.tif/.tiff/.svs` and
OpenSlide otherwise.

Coordinates: the *analysis grid* is the slide resampled to `target_mpp` (µm per pixel); analysis pixel (r, c)
covers level-0 pixels [c * scale, (c + 1) * scale) x [r * scale, (r + 1) * scale) with `scale = target_mpp /
slide mpp`. A region is read from the finest pyramid level that is not finer than needed (downsample <= scale)
and resampled with PIL's `resize(box=...)`, so sub-pixel origins are honoured; at `scale` equal to a level's
downsample on whole pixels the level's pixels are returned as they are.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from cellseg.inference.writers import UM_PER_CM

BACKENDS = ("auto", "tiffslide", "openslide")
TIFFSLIDE_SUFFIXES = (".tif", ".tiff", ".svs")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")
MPP_PROPERTIES = ("openslide.mpp-x", "tiffslide.mpp-x")
THUMBNAIL_STRIP = 256  # thumbnail rows read at a time
UM_PER_UNIT = {"CENTIMETER": UM_PER_CM, "INCH": 25_400.0, 3: UM_PER_CM, 2: 25_400.0}  # TIFF ResolutionUnit


class SlideError(ValueError):
    """A slide that cannot be read as asked (unknown format, no resolution, bad region)."""


def open_backend(path: str | os.PathLike, backend: str = "auto"):
    """The slide object of `backend` for `path` (OpenSlide-like API); one SlideError naming the file otherwise."""
    path = Path(path)
    if backend not in BACKENDS:
        raise SlideError(f"infer.slide.backend={backend!r}; expected one of {BACKENDS}")
    if not path.is_file():
        raise FileNotFoundError(f"slide {path} does not exist")
    if backend == "auto":
        backend = "tiffslide" if path.suffix.lower() in TIFFSLIDE_SUFFIXES else "openslide"
    try:
        if backend == "tiffslide":
            import tiffslide

            return tiffslide.TiffSlide(str(path))
        import openslide

        return openslide.OpenSlide(str(path))
    except ImportError as err:
        raise SlideError(f"slide {path}: backend {backend} is not installed ({err}); pip install "
                         "openslide-python openslide-bin tiffslide") from err
    except Exception as err:  # each backend has its own error types for unsupported or broken files
        raise SlideError(f"slide {path}: {backend} cannot open it ({type(err).__name__}: {err}); expected a "
                         f"whole-slide image ({', '.join(SLIDE_SUFFIXES)})") from err


def slide_mpp(path: str | os.PathLike, properties) -> float | None:
    """µm per level-0 pixel: the backend's mpp property, else OME PhysicalSizeX, else the TIFF resolution tag."""
    for key in MPP_PROPERTIES:
        value = properties.get(key)
        if value not in (None, "", "None"):
            return float(value)
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    with tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            found = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
            unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
            if found and (unit is None or unit.group(1) in ("µm", "um", "\u00b5m")):
                return float(found.group(1))
        page = tif.pages.first
        resolution, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        if resolution is not None and unit is not None:
            numerator, denominator = resolution.value
            unit_name = getattr(unit.value, "name", unit.value)
            if numerator and unit_name in UM_PER_UNIT:
                return UM_PER_UNIT[unit_name] * denominator / numerator
    return None


@dataclass(frozen=True)
class SlideGeometry:
    """Level-0 size (width, height), µm per level-0 pixel, analysis µm per pixel and the scale between them."""

    level0_size: tuple[int, int]
    slide_mpp: float | None
    target_mpp: float | None
    scale: float  # level-0 pixels per analysis pixel

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the analysis grid."""
        width, height = self.level0_size
        return max(1, math.floor(height / self.scale)), max(1, math.floor(width / self.scale))


class SlideReader:
    """A slide read in analysis-grid coordinates; picklable, and each process (DataLoader workers, forked or
    spawned) opens the file itself."""

    def __init__(self, path: str | os.PathLike, target_mpp: float | None = None, backend: str = "auto",
                 mpp: float | None = None) -> None:
        """`target_mpp`: the analysis resolution (None: level 0); `mpp`: the slide's µm per pixel when its
        metadata has none (or is wrong)."""
        self.path, self.backend = Path(path), backend
        self._slide, self._opened_by = None, None
        slide = self.slide
        found = float(mpp) if mpp is not None else slide_mpp(self.path, slide.properties)
        if target_mpp is not None and found is None:
            raise SlideError(f"slide {self.path} records no resolution (mpp) and infer.slide.mpp is not set; "
                             f"set infer.slide.mpp=<µm per pixel of level 0> to read it at {target_mpp} µm/px")
        for value, key in ((found, "the slide's mpp"), (target_mpp, "infer.mpp")):
            if value is not None and not value > 0:
                raise SlideError(f"slide {self.path}: {key}={value}; expected µm per pixel > 0")
        scale = target_mpp / found if target_mpp is not None else 1.0
        self.geometry = SlideGeometry(tuple(int(v) for v in slide.dimensions), found, target_mpp, scale)
        self.downsamples = tuple(float(d) for d in slide.level_downsamples)

    @property
    def slide(self):
        """The backend's handle, opened once per process: a forked DataLoader worker must not share the parent's
        file handle (concurrent reads through one handle corrupt the decoded tiles)."""
        if self._slide is None or self._opened_by != os.getpid():
            self._slide, self._opened_by = open_backend(self.path, self.backend), os.getpid()
        return self._slide

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_slide": None, "_opened_by": None}

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape

    def level_for(self, scale: float) -> int:
        """The coarsest level whose downsample does not exceed `scale` (level 0 when all do)."""
        fitting = [i for i, d in enumerate(self.downsamples) if d <= scale * (1 + 1e-6)]
        return max(fitting, key=lambda i: self.downsamples[i]) if fitting else 0

    def read(self, top: int, left: int, height: int, width: int, scale: float | None = None) -> np.ndarray:
        """uint8 RGB (height, width, 3) of the grid at `scale` level-0 px per pixel (default: the analysis
        grid) from pixel (top, left); transparent pixels come out white, and the last level pixel is repeated where
        resampling reaches past the slide's border."""
        scale = self.geometry.scale if scale is None else scale
        level = self.level_for(scale)
        step = scale / self.downsamples[level]  # level pixels per output pixel (< 1: upsampling)
        x0, y0 = left * step, top * step  # output region in level coordinates
        x1, y1 = (left + width) * step, (top + height) * step
        exact = abs(step - 1) < 1e-9 and float(x0).is_integer() and float(y0).is_integer()
        pad = 0 if exact else math.ceil(step) + 1  # the resampling filter's support beyond the box
        rx, ry = math.floor(x0) - pad, math.floor(y0) - pad
        rw, rh = (width, height) if exact else (math.ceil(x1) + pad - rx, math.ceil(y1) + pad - ry)
        region = self._read_level(level, rx, ry, rw, rh)
        if not exact:
            region = region.resize((width, height), Image.Resampling.BILINEAR,
                                   box=(x0 - rx, y0 - ry, x1 - rx, y1 - ry))
        return np.array(region, dtype=np.uint8)  # a writable copy (PIL's buffer is read-only)

    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> Image.Image:
        """RGB region of `level` at level coordinates (x, y); the part outside the level repeats its edge."""
        level_width, level_height = self.slide.level_dimensions[level]
        x0, y0 = min(max(x, 0), level_width - 1), min(max(y, 0), level_height - 1)
        x1, y1 = max(min(x + width, level_width), x0 + 1), max(min(y + height, level_height), y0 + 1)
        down = self.downsamples[level]
        region = _on_white(self.slide.read_region((round(x0 * down), round(y0 * down)), level, (x1 - x0, y1 - y0)))
        if (x0, y0, x1, y1) == (x, y, x + width, y + height):
            return region
        padding = ((y0 - y, y + height - y1), (x0 - x, x + width - x1), (0, 0))
        return Image.fromarray(np.pad(np.asarray(region), padding, mode="edge"))

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """The analysis grid downsampled to at most `max_side` px a side, and its factor (analysis px per
        thumbnail px, >= 1)."""
        height, width = self.shape
        factor = max(1.0, max(height, width) / max_side)
        size = max(1, math.floor(height / factor)), max(1, math.floor(width / factor))
        scale = self.geometry.scale * factor
        strips = [self.read(top, 0, min(THUMBNAIL_STRIP, size[0] - top), size[1], scale=scale)
                  for top in range(0, size[0], THUMBNAIL_STRIP)]  # strips: bounded memory without a pyramid
        return np.concatenate(strips), factor


def _on_white(region: Image.Image) -> Image.Image:
    """RGB of a region; RGBA is composited over white (OpenSlide's transparent out-of-slide pixels)."""
    if region.mode == "RGBA":
        background = Image.new("RGBA", region.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, region).convert("RGB")
    return region.convert("RGB")


def tissue_mask(thumbnail: np.ndarray, min_saturation: float = 0.05) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail: HSV saturation above Otsu's threshold of the thumbnail, and
    at least `min_saturation` (stained tissue is coloured, glass and margins are near grey)."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    saturation = rgb2hsv(thumbnail)[..., 1]
    threshold = threshold_otsu(saturation) if np.ptp(saturation) > 0 else 1.0
    return saturation > max(threshold, min_saturation)
