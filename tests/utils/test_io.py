"""Image/label I/O: exact 16-bit round trips, clear errors, atomic writes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from cellseg.utils.io import atomic_path, read_image, read_label, write_json, write_label


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
