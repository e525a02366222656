"""Image/label I/O: exact 16-bit round trips (labels and images), every image format, clear errors, atomic writes."""

from __future__ import annotations

import os
import stat
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg.utils.io import IMAGE_FILE_SUFFIXES, atomic_path, read_image, read_label, write_json, write_label


def test_label_round_trip_is_exact_in_png_and_tiff(tmp_path):
    label = np.zeros((40, 50), np.int32)
    label[5:9, 5:9], label[20:30, 10:12], label[0, 0] = 1, 65535, 300
    for name in ("a.png", "a.tif"):
        write_label(tmp_path / name, label)
        np.testing.assert_array_equal(read_label(tmp_path / name), label)
    big = label.copy()
    big[1, 1] = 70000
    write_label(tmp_path / "big.tif", big)
    np.testing.assert_array_equal(read_label(tmp_path / "big.tif"), big)


def test_png_cannot_hold_more_than_65535_ids(tmp_path):
    with pytest.raises(ValueError, match="a 16-bit PNG cannot hold it"):
        write_label(tmp_path / "x.png", np.full((2, 2), 70000))
    assert list(tmp_path.iterdir()) == []


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(tmp_path / "g.png")
    Image.fromarray(np.full((3, 4, 4), 7, np.uint8)).save(tmp_path / "a.png")
    grey, rgba = read_image(tmp_path / "g.png"), read_image(tmp_path / "a.png")
    assert grey.shape == rgba.shape == (3, 4, 3) and grey.flags.writeable
    np.testing.assert_array_equal(grey[..., 2], np.arange(12).reshape(3, 4))


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_label(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="single-channel"):
        read_label(rgb)


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": np.float32(1.5)})
    assert target.read_text().strip() == '{\n  "a": 1.5\n}'
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode & stat.S_IRGRP, "written files keep the usual permissions (not mkstemp's 0600)"


def twelve_bit_ramp(height: int = 64, width: int = 64) -> np.ndarray:
    """uint16 H x W holding every 12-bit grey level 0..4095 (the maximum only 4095: 12-bit data)."""
    return (np.arange(height * width) % 4096).astype(np.uint16).reshape(height, width)


def test_16bit_png_and_tiff_keep_every_grey_level_of_12bit_data(tmp_path):
    grey = twelve_bit_ramp()
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1))
    for name in ("grey16.png", "rgb16.tif"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint16 and image.shape == (64, 64, 3), name
        assert len(np.unique(image[..., 0])) == 4096 and image.max() == 4095, name
        np.testing.assert_array_equal(image[..., 0], grey)


def test_jpeg_and_bmp_are_read_as_rgb_uint8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), rgb)
    jpeg = read_image(tmp_path / "a.jpg")
    assert jpeg.dtype == np.uint8 and jpeg.shape == rgb.shape
    assert {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"} <= set(IMAGE_FILE_SUFFIXES)


def write_16bit_rgb_png(path, array: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = array.shape[:2]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_a_16bit_colour_png_is_refused_rather_than_cut_to_8_bits(tmp_path):
    write_16bit_rgb_png(tmp_path / "rgb16.png", np.stack([twelve_bit_ramp(8, 8)] * 3, axis=-1))
    with pytest.raises(ValueError, match=r"rgb16\.png.*16-bit RGB PNG.*TIFF"):
        read_image(tmp_path / "rgb16.png")
