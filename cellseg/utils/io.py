"""Image, label and JSON I/O. Every writer is atomic: a temporary file in the target folder, then a rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

LABEL_SUFFIXES = (".png", ".tif", ".tiff")
# Every file `read_image` reads (PIL for PNG, JPEG and BMP, tifffile for TIFF).
IMAGE_FILE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
PIL_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
MAX_UINT16_LABEL = 65535


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; shared caches need the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _load_array(path: Path, what: str, pil_modes: tuple[str, ...] | None = None) -> np.ndarray:
    """TIFF via tifffile, anything else via PIL (converted to RGB unless its mode is in `pil_modes`)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        with Image.open(path) as img:
            if img.format == "PNG" and img.mode not in PIL_16BIT_MODES and _has_16bit_samples(img):
                # Pillow keeps only the high 8 bits of 16-bit colour PNGs: refuse rather than lose them silently
                raise ValueError(f"it is a 16-bit {img.mode} PNG, which Pillow reads only as 8 bits per channel; "
                                 "save it as a 16-bit TIFF (or a 16-bit grey PNG)")
            return np.asarray(img if pil_modes is None or img.mode in pil_modes else img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from err


def _has_16bit_samples(img: Image.Image) -> bool:
    """Whether PIL decodes this PNG from 16-bit samples (its raw mode, e.g. 'RGB;16B')."""
    return any(";16" in str(tile[3]) for tile in img.tile)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB H x W x 3 as stored: uint8, or uint16 for 16-bit PNG/TIFF (no rescaling: the caller decides the bit
    depth, see cellseg/data/intensity.py). Grey images are replicated, an alpha channel is dropped."""
    path = Path(path)
    array = _load_array(path, "image", pil_modes=("L", "RGB", "RGBA", *PIL_16BIT_MODES))
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image {path} has shape {array.shape}; expected H x W, H x W x 3 or H x W x 4")
    array = array[..., :3]
    if array.dtype == np.int32 and array.size and 0 <= array.min() and array.max() <= MAX_UINT16_LABEL:
        array = array.astype(np.uint16)  # PIL mode "I" of a 16-bit grey PNG
    if array.dtype.kind != "u" or array.dtype.itemsize > 2:
        raise ValueError(f"image {path} has dtype {array.dtype}; expected uint8 or uint16")
    return np.array(array, dtype=np.uint8 if array.dtype.itemsize == 1 else np.uint16)  # writable, native order


def stored_image_dtype(path: str | os.PathLike) -> np.dtype:
    """uint8 or uint16: the dtype `read_image` returns for `path`, from the file header only."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                dtype = np.dtype(tif.series[0].dtype)
        else:
            with Image.open(path) as img:
                dtype = np.dtype(np.uint16 if img.mode in PIL_16BIT_MODES else np.uint8)
    except (OSError, ValueError, IndexError) as err:
        raise ValueError(f"cannot read the header of image {path}: {err}") from err
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image {path} has dtype {dtype}; expected uint8 or uint16")
    return dtype


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Instance label map as int32 (16-bit PNG or TIFF; 0 = background)."""
    path = Path(path)
    array = _load_array(path, "label map")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"label map {path} has shape {array.shape}; expected a single-channel H x W map")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"label map {path} has dtype {array.dtype}; expected an integer type")
    if array.size and array.min() < 0:
        raise ValueError(f"label map {path} has negative ids; expected 0 = background, 1..N = instances")
    return array.astype(np.int32)


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write an instance map as a 16-bit PNG (or uint16/uint32 TIFF when the suffix says .tif)."""
    path = Path(path)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map for {path} has shape {label.shape}; expected H x W")
    top = int(label.max()) if label.size else 0
    if path.suffix.lower() in (".tif", ".tiff"):
        dtype = np.uint16 if top <= MAX_UINT16_LABEL else np.uint32
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, label.astype(dtype), compression="zlib")
        return
    if top > MAX_UINT16_LABEL:
        raise ValueError(f"label map for {path} has id {top} > {MAX_UINT16_LABEL}; a 16-bit PNG cannot hold it")
    with atomic_path(path) as tmp:
        Image.fromarray(label.astype(np.uint16)).save(tmp, format="PNG")


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image for {path} has dtype {image.dtype}; expected uint8")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def write_mask_uint8(path: str | os.PathLike, mask: np.ndarray) -> None:
    """8-bit single-channel PNG (weak labels: scribbles, ignore maps)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(tmp, format="PNG")
