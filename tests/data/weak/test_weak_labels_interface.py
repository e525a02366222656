"""FullLabels and NoLabels: the GT paths for full supervision; nothing (and no label file opened) for COIN."""

from __future__ import annotations

import builtins
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import cellseg.utils.io as cellseg_io
from cellseg.data.layout import SplitLayout
from cellseg.data.weak import FullLabels, NoLabels, ScribbleLabels, WeakLabels
from cellseg.utils.io import write_image


def test_class_attributes():
    assert (FullLabels.kind, FullLabels.target_format, FullLabels.reads_ground_truth) == (
        "full",
        "instance",
        True,
    )
    assert (NoLabels.kind, NoLabels.target_format, NoLabels.reads_ground_truth) == (
        "annotation_free",
        "none",
        False,
    )
    assert (ScribbleLabels.kind, ScribbleLabels.target_format) == ("scribble", "scribble")
    assert ScribbleLabels.reads_ground_truth is True
    for cls in (FullLabels, NoLabels, ScribbleLabels):
        assert issubclass(cls, WeakLabels) and cls.ignore_index == 255


def test_full_labels_are_the_ground_truth(make_layout, synthetic_labels):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)[::-1]
    paths = FullLabels().prepare(layout, ids)
    assert list(paths) == ids
    for image_id, path in paths.items():
        assert path == layout.labels_dir / f"{image_id}.png"
        target = FullLabels().read_target(path)
        assert target.dtype == np.int32
        assert np.array_equal(target, synthetic_labels[image_id])
    with pytest.raises(FileNotFoundError, match="missing_id"):
        FullLabels().prepare(layout, ["missing_id"])


@pytest.fixture
def images_only_layout(tmp_path) -> SplitLayout:
    layout = SplitLayout.of(tmp_path / "data", "Toy", "train")
    for index in range(3):
        write_image(layout.images_dir / f"img{index}.png", np.zeros((8, 8, 3), dtype=np.uint8))
    return layout


def test_no_labels_works_without_a_labels_folder(images_only_layout):
    assert not images_only_layout.labels_dir.exists()
    assert NoLabels().prepare(images_only_layout, images_only_layout.ids()) == {}


def test_no_labels_never_opens_a_label_file(images_only_layout, make_layout, synthetic_labels, monkeypatch):
    layout = make_layout({f"img{index}": synthetic_labels[f"img{index}"] for index in range(3)})
    labels_dir = str(layout.labels_dir)
    opened: list[str] = []

    def guard(original):
        def wrapper(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and str(file).startswith(labels_dir):
                opened.append(str(file))
                raise PermissionError(f"label file opened: {file}")
            return original(file, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))
    monkeypatch.setattr(Image, "open", guard(Image.open))
    monkeypatch.setattr(cellseg_io, "read_label", guard(cellseg_io.read_label))
    os.chmod(layout.labels_dir, 0)  # unreadable as well (ineffective as root, hence the guards above)
    try:
        assert NoLabels().prepare(layout, ["img0", "img1", "img2"]) == {}
        # the guard is live: FullLabels-style reading would be caught
        with pytest.raises(PermissionError):
            open(layout.labels_dir / "img0.png", "rb")
    finally:
        os.chmod(layout.labels_dir, 0o755)
    assert opened == [str(layout.labels_dir / "img0.png")]
    shutil.rmtree(layout.labels_dir)
    assert NoLabels().prepare(layout, ["img0"]) == {}


def test_no_labels_has_no_target_to_read(tmp_path):
    with pytest.raises(ValueError, match="no training target"):
        NoLabels().read_target(tmp_path / "x.png")
