"""Stage 0 of COIN: an initial unsupervised instance segmenter (UCIS), docs/methods/coin.md#ucis.

`classical_ucis` is a deterministic CPU recipe (stain channel, Otsu, clean-up, distance-transform watershed);
`read_ucis_folder` plugs in precomputed predictions (SSA/PSM) as 16-bit PNGs or COIN's B*256+G colour PNGs.
`ClassicalUcis` and `FolderUcis` are the `method.ucis` nodes (configs/method/ucis/): `ucis(image_rgb, image_id)`
gives U of one image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import color, filters, morphology, segmentation
from skimage.feature import peak_local_max

from cellseg.data.convert.coin_layout import decode_coin_mask

STAINS = ("auto", "hematoxylin", "intensity", "inverted_intensity")
THRESHOLDS = {"otsu": filters.threshold_otsu, "li": filters.threshold_li, "triangle": filters.threshold_triangle}
UCIS_FORMATS = ("auto", "uint16", "coin_bgr")

# `stain: auto`: below this mean saturation an image is treated as grey (fluorescence or grey bright-field);
# H&E tiles sit well above it (MoNuSeg ~0.3, DSB2018 colour >= 0.07), DSB2018 grey/fluorescence at 0.
GREY_SATURATION = 0.04
# A grey image whose mean intensity is below this has a dark background: fluorescence (bright nuclei).
DARK_BACKGROUND = 0.5


def rescale_percentiles(channel: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Linear map of the `low`/`high` percentiles to 0/1, clipped; a flat channel maps to zeros."""
    lo, hi = np.percentile(channel, [low, high])
    if hi <= lo:
        return np.zeros(channel.shape, dtype=np.float32)
    return np.clip((channel - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def resolve_stain(image_rgb: np.ndarray, stain: str = "auto") -> str:
    """The concrete stain for `stain`; `auto` decides by mean saturation (colour) and mean brightness."""
    if stain not in STAINS:
        raise ValueError(f"unknown stain {stain!r}; expected one of {STAINS}")
    if stain != "auto":
        return stain
    rgb = as_float_rgb(image_rgb)
    saturation = float(_saturation(rgb).mean())
    if saturation >= GREY_SATURATION:
        return "hematoxylin"
    return "intensity" if float(rgb.mean()) < DARK_BACKGROUND else "inverted_intensity"


def stain_channel(image_rgb: np.ndarray, stain: str = "auto") -> np.ndarray:
    """The nuclear signal in [0, 1] (float32 H x W, bright = nucleus), rescaled by its 1st/99th percentile."""
    stain = resolve_stain(image_rgb, stain)
    rgb = as_float_rgb(image_rgb)
    if stain == "hematoxylin":
        raw = color.rgb2hed(rgb)[..., 0]
    else:
        raw = rgb.mean(axis=2)
        if stain == "inverted_intensity":
            raw = 1.0 - raw
    return rescale_percentiles(raw)


def classical_ucis(
    image_rgb: np.ndarray,
    stain: str = "auto",
    threshold: str = "otsu",
    min_area: int = 30,
    max_hole: int = 100,
    peak_min_distance: int = 4,
) -> np.ndarray:
    """Instance map (int32, 0 = background, 1..N) of nuclei by threshold + distance-transform watershed.

    Recipe (docs/methods/coin.md#ucis): stain channel, Gaussian sigma 1, global threshold, remove objects < min_area,
    fill holes <= max_hole, opening disk(1); distance transform + Gaussian sigma 1, peaks at least
    `peak_min_distance` apart inside the mask, watershed on -dist; blobs without a peak stay one instance;
    instances < min_area are dropped.
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"unknown threshold {threshold!r}; expected one of {tuple(THRESHOLDS)}")
    signal = filters.gaussian(stain_channel(image_rgb, stain), sigma=1.0)
    if signal.max() <= signal.min():
        return np.zeros(signal.shape, dtype=np.int32)
    mask = signal > THRESHOLDS[threshold](signal)
    mask = remove_small_components(mask, min_area)
    mask = fill_small_holes(mask, max_hole)
    mask = ndi.binary_opening(mask, structure=morphology.disk(1))
    labels = _split_touching(mask, peak_min_distance)
    labels = remove_small_components(labels, min_area)
    return segmentation.relabel_sequential(labels)[0].astype(np.int32)


def _split_touching(mask: np.ndarray, peak_min_distance: int) -> np.ndarray:
    """Watershed of the smoothed distance transform from its peaks; peak-free blobs are kept whole."""
    blobs, _ = ndi.label(mask)
    dist = filters.gaussian(ndi.distance_transform_edt(mask), sigma=1.0)
    peaks = peak_local_max(dist, min_distance=peak_min_distance, labels=blobs, exclude_border=False)
    peak_mask = np.zeros(mask.shape, dtype=bool)
    peak_mask[tuple(peaks.T)] = True
    markers, n_markers = ndi.label(peak_mask)
    labels = segmentation.watershed(-dist, markers, mask=mask)
    # a blob with no peak gets no marker, so watershed leaves it 0: give it its own id
    orphan = mask & (labels == 0)
    orphan_blobs, _ = ndi.label(orphan)
    labels[orphan] = orphan_blobs[orphan] + n_markers
    return labels


def remove_small_components(labels_or_mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected components (bool input) or labelled objects (int input) with fewer than `min_area` px."""
    is_mask = labels_or_mask.dtype == bool
    labels = ndi.label(labels_or_mask)[0] if is_mask else labels_or_mask
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    keep = ~small[labels] & (labels > 0)
    return keep if is_mask else np.where(keep, labels, 0)


def fill_small_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """Fill background components of at most `max_hole` px that do not touch the image border."""
    holes, _ = ndi.label(~mask)
    areas = np.bincount(holes.ravel())
    small = areas <= max_hole
    small[0] = False
    border_ids = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small[border_ids] = False
    return mask | small[holes]


def read_ucis_folder(directory: str | os.PathLike, image_id: str, format: str = "auto") -> np.ndarray:
    """Read `<directory>/<image_id>.png` as an int32 instance map (16-bit PNG or COIN's B*256+G colour PNG)."""
    if format not in UCIS_FORMATS:
        raise ValueError(f"unknown ucis.format {format!r}; expected one of {UCIS_FORMATS}")
    path = Path(directory) / f"{image_id}.png"
    if not path.is_file():
        raise FileNotFoundError(f"UCIS prediction {path} not found (ucis.dir/<image id>.png)")
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except OSError as err:
        raise ValueError(f"cannot read UCIS prediction {path}: {err}") from err
    if format == "auto":
        format = "coin_bgr" if array.ndim == 3 else "uint16"
    if format == "uint16":
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"UCIS prediction {path} has shape {array.shape} / {array.dtype}; "
                             "expected a single-channel integer (16-bit) PNG for ucis.format=uint16")
        return array.astype(np.int32)
    # COIN writes id = B*256 + G with OpenCV (BGR arrays); PIL reads the file in RGB order
    return decode_coin_mask(array, channel_order="rgb", source=path)


class ClassicalUcis:
    """`method/ucis=classical`: `classical_ucis` with the node's settings; `stain` is `method.stain`."""

    def __init__(
        self,
        stain: str = "auto",
        threshold: str = "otsu",
        min_area: int = 30,
        max_hole: int = 100,
        peak_min_distance: int = 4,
    ) -> None:
        check_stain(stain)
        if threshold not in THRESHOLDS:
            raise ValueError(f"method.ucis.threshold={threshold!r}; expected one of {tuple(THRESHOLDS)}")
        for key, value, low in (("min_area", min_area, 0), ("max_hole", max_hole, 0),
                                ("peak_min_distance", peak_min_distance, 1)):
            if not _is_int(value) or value < low:
                raise ValueError(f"method.ucis.{key}={value!r}; expected an integer >= {low}")
        self.stain, self.threshold = stain, threshold
        self.min_area, self.max_hole, self.peak_min_distance = int(min_area), int(max_hole), int(peak_min_distance)

    def __call__(self, image_rgb: np.ndarray, image_id: str) -> np.ndarray:
        """U (int32, 0 = background) of one image."""
        return classical_ucis(image_rgb, stain=self.stain, threshold=self.threshold, min_area=self.min_area,
                              max_hole=self.max_hole, peak_min_distance=self.peak_min_distance)


class FolderUcis:
    """`method/ucis=folder`: precomputed predictions `<dir>/<image id>.png` (SSA, PSM ...), see `read_ucis_folder`."""

    def __init__(self, dir: str | os.PathLike | None = None, format: str = "auto") -> None:
        if not dir:
            raise ValueError("method/ucis=folder needs method.ucis.dir=/path/to/<image id>.png predictions "
                             "(SSA/PSM outputs); use method/ucis=classical offline")
        if format not in UCIS_FORMATS:
            raise ValueError(f"method.ucis.format={format!r}; expected one of {UCIS_FORMATS}")
        self.dir, self.format = Path(dir), format

    def __call__(self, image_rgb: np.ndarray, image_id: str) -> np.ndarray:
        """U (int32, 0 = background) of one image, checked against the image size."""
        instances = read_ucis_folder(self.dir, image_id, self.format)
        if instances.shape != image_rgb.shape[:2]:
            raise ValueError(f"UCIS prediction {self.dir / image_id}.png is {instances.shape}; "
                             f"expected the image size {image_rgb.shape[:2]}")
        return instances


def check_stain(stain: str) -> None:
    """`method.stain` (the stain channel of the classical UCIS, the handcrafted features and the classical prompter)."""
    if stain not in STAINS:
        raise ValueError(f"method.stain={stain!r}; expected one of {STAINS}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max, 0 for black pixels; cheaper than a full rgb2hsv."""
    top = rgb.max(axis=2)
    return (top - rgb.min(axis=2)) / np.maximum(top, 1e-6)


def as_float_rgb(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image has shape {image.shape}; expected H x W x 3 RGB (or H x W grey)")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)
