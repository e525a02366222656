"""The one path from a stored image to the values a model sees: bit depth, then a per-image intensity stretch.

Bit depth (`data.bit_depth`): `read_image` returns uint8 or uint16 as stored. An image whose bit depth is 8 keeps
the uint8 path (stretch rounded to uint8, colour jitter on uint8 tensors, /255 in `to_normalised_tensor`), bit
for bit as before; a deeper image becomes float32 in [0, 1] (value / (2**bits - 1)) and stays float to the
network, so every grey level of 12-bit data reaches it as a distinct value. `null` (auto) takes 8 bits for uint8
images and, for uint16 images, the smallest bit depth (at least 8) that holds the image's maximum; an explicit
8..16 holds for every image (for a dataset whose images do not all reach their range).

Stretch (`data.stretch_percentiles`): fluorescence images differ in exposure by an order of magnitude (DSB2018:
mean grey level 4 to 60); the usual remedy in nuclei segmentation (StarDist, Cellpose) is to map each image's
low/high percentiles to 0/1. Here it works on the image after the bit depth (uint8 or float), before augmentation
and the ImageNet normalisation, over all channels at once (a colour image keeps its hues).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from cellseg.utils.io import read_image, stored_image_dtype

BIT_DEPTHS = range(8, 17)


def check_stretch(percentiles: Sequence[float] | None, key: str = "data.stretch_percentiles") -> tuple[float, float] | None:
    """(low, high) percentiles, or None for no stretch; one clear error otherwise."""
    if percentiles is None:
        return None
    values = tuple(float(v) for v in percentiles)
    if len(values) != 2 or not 0.0 <= values[0] < values[1] <= 100.0:
        raise ValueError(f"{key}={list(percentiles)}; expected null or [low, high] with 0 <= low < high <= 100")
    return values


def check_bit_depth(bit_depth, key: str = "data.bit_depth") -> int | None:
    """None (auto) or an int in 8..16; one clear error naming `key` otherwise."""
    if bit_depth is None:
        return None
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, (int, np.integer)) or bit_depth not in BIT_DEPTHS:
        raise ValueError(f"{key}={bit_depth!r}; expected null (auto: uint8 -> 8 bits, uint16 -> the bits its "
                         f"maximum needs) or an integer from {BIT_DEPTHS.start} to {BIT_DEPTHS.stop - 1}")
    return int(bit_depth)


def detected_bit_depth(image: np.ndarray) -> int:
    """8 for uint8; for uint16 the smallest bit depth >= 8 that holds the image's maximum."""
    if image.dtype == np.uint8:
        return 8
    if image.dtype != np.uint16:
        raise ValueError(f"image has dtype {image.dtype}; expected uint8 or uint16")
    return max(8, int(image.max()).bit_length() if image.size else 8)


def to_model_range(image: np.ndarray, bit_depth: int | None, source: str | os.PathLike = "image",
                   key: str = "data.bit_depth") -> tuple[np.ndarray, int]:
    """(uint8 image when its bit depth is 8, else float32 in [0, 1]; that bit depth).

    `bit_depth` None detects it (`detected_bit_depth`); an explicit one must hold the image's maximum, else a
    ValueError names `source` and `key`. A uint16 image of bit depth 8 is cast to uint8 (no value changes).
    """
    depth = detected_bit_depth(image) if bit_depth is None else bit_depth
    top = int(image.max()) if image.size else 0
    if top >= 2**depth:
        raise ValueError(f"{source} has grey level {top}, beyond {key}={depth} (max {2**depth - 1}); "
                         "set it to the images' real bit depth or null (auto)")
    if depth == 8:
        return image.astype(np.uint8, copy=False), depth
    return image.astype(np.float32) / np.float32(2**depth - 1), depth


def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 unchanged; float in [0, 1] rounded to 0..255. For the stages built for 8-bit RGB (SAM, the ViT
    feature extractor, DenseCRF): a deeper image reaches them after its bit depth and stretch, 8 bits deep."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image has dtype {image.dtype}; expected uint8 or float in [0, 1]")
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def stretch_intensity(image: np.ndarray, percentiles: tuple[float, float] | None) -> np.ndarray:
    """`percentiles` mapped to the ends of the range (clipped); unchanged when None or flat.

    uint8 -> uint8 (0..255, rounded: the historical 8-bit path); float in [0, 1] -> float32 in [0, 1], not
    quantised, so distinct grey levels between the percentiles stay distinct.
    """
    if percentiles is None:
        return image
    low, high = np.percentile(image, percentiles)
    if high <= low:  # a flat image has nothing to stretch
        return image
    if image.dtype != np.uint8:
        scaled = (image.astype(np.float32) - np.float32(low)) / np.float32(high - low)
        return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def prepare_image(image: np.ndarray, bit_depth: int | None, stretch: tuple[float, float] | None,
                  source: str | os.PathLike = "image") -> tuple[np.ndarray, int]:
    """A stored image (uint8/uint16 RGB) -> (what the model's preprocessing takes, its bit depth): the bit
    depth (`to_model_range`), then the stretch. uint8 for 8-bit images, float32 in [0, 1] otherwise."""
    scaled, depth = to_model_range(image, bit_depth, source)
    return stretch_intensity(scaled, stretch), depth


def load_image(path: str | os.PathLike, bit_depth: int | None,
               stretch: tuple[float, float] | None) -> tuple[np.ndarray, int]:
    """`read_image` then `prepare_image`: the one way images reach a model (training, evaluation, inference)."""
    return prepare_image(read_image(path), bit_depth, stretch, source=path)


def scan_bit_depths(paths: Iterable[str | os.PathLike], bit_depth: int | None) -> list[tuple[str, int]]:
    """(stored dtype name, bit depth) per image; uint8 ones from their header only, uint16 ones are read to
    find their maximum when `bit_depth` is None."""
    found = []
    for path in paths:
        dtype = stored_image_dtype(path)
        if bit_depth is not None:
            found.append((dtype.name, bit_depth))
        elif dtype == np.uint8:
            found.append((dtype.name, 8))
        else:
            found.append((dtype.name, detected_bit_depth(read_image(path))))
    return found


def describe_bit_depths(what: str, found: Sequence[tuple[str, int]], bit_depth: int | None) -> str:
    """One log line: how many images of `what` are stored how and which bit depth they were given."""
    stored = ", ".join(f"{n} {dtype}" for dtype, n in sorted(Counter(d for d, _ in found).items()))
    if bit_depth is not None:
        return f"{what}: {len(found)} images ({stored}) read as {bit_depth}-bit (data.bit_depth={bit_depth})"
    depths = ", ".join(f"{bits}-bit ({n})" for bits, n in sorted(Counter(b for _, b in found).items()))
    hint = "" if all(b == 8 for _, b in found) else " (detected from each image's maximum; data.bit_depth fixes one)"
    return f"{what}: {len(found)} images ({stored}), bit depth {depths}{hint}"
