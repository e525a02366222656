"""The COIN repository layout `data/<Dataset>/<domain>/{image,mask}/` (domain = train, test, Fold1-3).

Masks are 8-bit 3-channel images written by OpenCV: in OpenCV's BGR channel order the id is B * 256 + G and R = 0.
Read from disk with PIL (RGB order) the same pixel is (R, G, B) = (0, G, B). COIN's own training loader decodes in
RGB order, which is inconsistent; here one reader decodes with one channel order, and a mask with R != 0 (a
mis-ordered or non-COIN file) is rejected. BRCA is only distributed in this layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from cellseg.data.convert.common import (
    DatasetWriter,
    SourceInfo,
    files_by_stem,
    pair_files,
    progress,
    require_dir,
)
from cellseg.utils.io import MAX_UINT16_LABEL, read_image

KNOWN_DOMAINS = ("train", "test", "Fold1", "Fold2", "Fold3")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_ORDERS = {"bgr": (0, 1, 2), "rgb": (2, 1, 0)}  # channel indices of (B, G, R) in each order
BRCA_EXPECTED = {"train": (90,), "test": (30,)}


def _order(channel_order: str) -> tuple[int, int, int]:
    if channel_order not in _ORDERS:
        raise ValueError(f"channel_order {channel_order!r}; expected 'bgr' (OpenCV) or 'rgb' (PIL)")
    return _ORDERS[channel_order]


def decode_coin_mask(array: np.ndarray, channel_order: str = "bgr", *, source: str | os.PathLike = "COIN mask") -> np.ndarray:
    """int32 instance map from a COIN 3-channel mask: id = B * 256 + G, R must be 0.

    `channel_order` is the order of the array's channels: 'bgr' as cv2.imread returns it, 'rgb' as PIL does.
    """
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise ValueError(f"{source}: mask has shape {array.shape} and dtype {array.dtype}; expected H x W x 3 uint8")
    b, g, r = (array[..., i] for i in _order(channel_order))
    if r.any():
        raise ValueError(
            f"{source}: {int(np.count_nonzero(r))} pixels have R != 0; a COIN mask stores id = B * 256 + G with R = 0 "
            f"(channel order assumed {channel_order!r}: mis-ordered channels or not a COIN mask?)"
        )
    return b.astype(np.int32) * 256 + g.astype(np.int32)


def encode_coin_mask(label: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """H x W x 3 uint8 COIN mask of an instance map (ids 0..65535): B = id // 256, G = id % 256, R = 0."""
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label has shape {label.shape} and dtype {label.dtype}; expected an H x W integer map")
    if label.size and (label.min() < 0 or label.max() > MAX_UINT16_LABEL):
        raise ValueError(f"label ids span {label.min()}..{label.max()}; a COIN mask holds 0..{MAX_UINT16_LABEL}")
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    b, g, _ = _order(channel_order)
    out[..., b] = label // 256
    out[..., g] = label % 256
    return out


def read_coin_mask(path: str | os.PathLike) -> np.ndarray:
    """int32 instance map of a COIN mask file (read with PIL, i.e. RGB order)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB") if img.mode not in ("RGB", "RGBA") else img)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read COIN mask ({err})") from err
    return decode_coin_mask(array[..., :3], channel_order="rgb", source=path)


def find_domains(src: Path) -> dict[str, Path]:
    """{domain name: folder} of every child folder of `src` that holds image/ and mask/."""
    require_dir(src, "a COIN dataset folder data/<Dataset>/ holding <domain>/{image,mask}/")
    domains = {p.name: p for p in sorted(src.iterdir()) if (p / "image").is_dir() and (p / "mask").is_dir()}
    if not domains:
        found = sorted(p.name for p in src.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"{src}: no <domain>/image/ + <domain>/mask/ folders (domain one of {list(KNOWN_DOMAINS)}); found {found}"
        )
    return domains


def _coin_info(name: str) -> SourceInfo:
    return SourceInfo(
        title=f"{name} as distributed in the COIN repository layout (data/{name}/<domain>/{{image,mask}})",
        citation="the original publication of the dataset; COIN repository for this copy",
        origin="COIN repository data/ folder",
        licence=None,
        conversion="3-channel masks decoded as id = B * 256 + G (OpenCV BGR order; R must be 0), images stored as RGB "
        "PNG; each domain folder becomes a split of the same name.",
        notes=("Keep the original dataset's licence and citation with any copy.",),
    )


BRCA_INFO = SourceInfo(
    title="BRCA: 1000 x 1000 TCGA breast cancer H&E crops, as used by COIN",
    citation="see the COIN paper and repository for the origin of these crops",
    origin="COIN repository data/BRCA/<domain>/{image,mask}",
    licence=None,
    conversion="3-channel masks decoded as id = B * 256 + G (OpenCV BGR order; R must be 0), images stored as RGB PNG.",
)


def convert_coin(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_counts: bool = True,
    name: str | None = None,
    expected=None,
    info: SourceInfo | None = None,
) -> Path:
    """`<src> = data/<Dataset>` with `<domain>/{image,mask}/` -> `<dst>/<name>/<domain>`; name defaults to src's name."""
    src = Path(src)
    name = name or src.resolve().name
    domains = find_domains(src)
    with DatasetWriter(dst, name, overwrite=overwrite) as writer:
        for domain, folder in domains.items():
            images = files_by_stem(folder / "image", IMAGE_SUFFIXES)
            masks = files_by_stem(folder / "mask", (".png",))
            for image_id in progress(pair_files(images, masks, folder, "mask"), name, domain):
                image = read_image(images[image_id])
                label = read_coin_mask(masks[image_id])
                writer.add(domain, image_id, image, label, source=masks[image_id], modality="histopathology")
        return writer.finish(info or _coin_info(name), src=src, expected=expected if check_counts else None)


def convert_brca(src, dst, *, overwrite: bool = False, check_counts: bool = True) -> Path:
    """BRCA from the COIN layout `data/BRCA/{train,test}/{image,mask}` -> `<dst>/BRCA/{train,test}` (90 / 30)."""
    return convert_coin(
        src, dst, overwrite=overwrite, check_counts=check_counts, name="BRCA", expected=BRCA_EXPECTED, info=BRCA_INFO
    )
