"""DatasetWriter: layout, index.csv, SOURCE.md, manifest, atomicity, count checks, 16-bit limits."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from cellseg.data.convert.common import (
    MANIFEST_NAME,
    CountMismatchError,
    DatasetWriter,
    SourceInfo,
    verify_manifest,
)
from cellseg.data.layout import SplitLayout
from cellseg.utils.io import read_image, read_label

INFO = SourceInfo(title="Toy set", citation="Doe 2020", origin="nowhere", licence="CC0 1.0", conversion="none")


def _sample(seed: int, shape=(12, 10)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    label = np.zeros(shape, dtype=np.int32)
    label[1:4, 1:4], label[6:9, 2:7] = 1, 2
    return image, label


def test_writer_writes_layout_index_source_and_manifest(tmp_path):
    image, label = _sample(0)
    with DatasetWriter(tmp_path, "Toy") as writer:
        writer.add("train", "a", image, label, source="a.src", modality="histopathology", mpp=0.25, organ="kidney")
        writer.add("test", "b", image, label[:, ::-1] * 3, source="b.src", instance_classes={3: "x", 6: "y"})
        out = writer.finish(INFO, src=tmp_path / "native", expected={"train": 1, "test": (1, 2)})
    assert out == tmp_path / "Toy"
    layout = SplitLayout.of(tmp_path, "Toy", "train")
    assert layout.ids() == ["a"]
    np.testing.assert_array_equal(read_image(layout.image_path("a")), image)
    np.testing.assert_array_equal(read_label(layout.label_path("a")), label)
    np.testing.assert_array_equal(read_label(SplitLayout.of(tmp_path, "Toy", "test").label_path("b")), label[:, ::-1] * 3)
    index = pd.read_csv(out / "train" / "index.csv")
    assert list(index.columns) == ["id", "height", "width", "nuclei", "modality", "mpp", "organ"]
    assert index.iloc[0].to_dict() == {"id": "a", "height": 12, "width": 10, "nuclei": 2, "modality": "histopathology",
                                       "mpp": 0.25, "organ": "kidney"}
    classes = pd.read_csv(out / "test" / "instance_classes.csv")
    assert classes.values.tolist() == [["b", 3, "x"], ["b", 6, "y"]]
    source = (out / "SOURCE.md").read_text()
    assert "Licence: CC0 1.0" in source and "Doe 2020" in source and "| train | 1 | 2 |" in source
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    listed = {line.split("  ")[1]: line.split("  ")[0] for line in lines}
    assert "train/images/a.png" in listed and "SOURCE.md" in listed and MANIFEST_NAME not in listed
    assert listed["train/labels/a.png"] == hashlib.sha256((out / "train/labels/a.png").read_bytes()).hexdigest()
    assert verify_manifest(out) == []
    (out / "train" / "index.csv").write_text("tampered\n")
    assert verify_manifest(out) == ["train/index.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["Toy"]  # no staging folder left behind


def test_failure_midway_leaves_nothing(tmp_path):
    image, label = _sample(1)
    with pytest.raises(RuntimeError, match="boom"), DatasetWriter(tmp_path, "Toy") as writer:
        writer.add("train", "a", image, label, source="a")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_count_mismatch_is_an_error_and_leaves_nothing(tmp_path):
    image, label = _sample(2)
    with pytest.raises(CountMismatchError, match=r"split 'train' has 1 images, expected 37 or 30"):
        with DatasetWriter(tmp_path, "Toy") as writer:
            writer.add("train", "a", image, label, source="a")
            writer.finish(INFO, src=tmp_path, expected={"train": (37, 30)})
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    image, label = _sample(3)
    for image_id in ("old", "new"):
        if image_id == "new":
            with pytest.raises(FileExistsError, match="overwrite"):
                DatasetWriter(tmp_path, "Toy")
        with DatasetWriter(tmp_path, "Toy", overwrite=True) as writer:
            writer.add("train", image_id, image, label, source=image_id)
            writer.finish(INFO, src=tmp_path)
    assert SplitLayout.of(tmp_path, "Toy", "train").ids() == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["Toy"]


def test_more_than_65535_instances_is_an_error(tmp_path):
    image = np.zeros((257, 256, 3), np.uint8)
    label = np.arange(257 * 256, dtype=np.int64).reshape(257, 256)  # 65791 instances
    with DatasetWriter(tmp_path, "Toy") as writer, pytest.raises(ValueError, match=r"big\.mat: 65791 instances"):
        writer.add("train", "a", image, label, source="big.mat")


def test_sparse_large_ids_are_renumbered_with_their_classes(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    label = np.zeros((4, 4), np.int64)
    label[0, 0], label[3, 3] = 70000, 5
    with DatasetWriter(tmp_path, "Toy") as writer:
        assert writer.add("train", "a", image, label, source="a", instance_classes={70000: "big", 5: "small"}) == 2
        writer.finish(INFO, src=tmp_path)
    written = read_label(tmp_path / "Toy/train/labels/a.png")
    assert written[0, 0] == 2 and written[3, 3] == 1 and written.max() == 2
    classes = pd.read_csv(tmp_path / "Toy/train/instance_classes.csv")
    assert classes[["instance", "class"]].values.tolist() == [[1, "small"], [2, "big"]]


@pytest.mark.parametrize(
    ("image", "label", "message"),
    [
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.int32), r"x\.png: label map has shape \(4, 5\)"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int32), r"x\.png: image has shape \(4, 4\)"),
        (np.zeros((4, 4, 3), np.uint8), -np.ones((4, 4), np.int32), "negative"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), "integer"),
    ],
)
def test_bad_arrays_are_rejected_naming_the_source(tmp_path, image, label, message):
    with DatasetWriter(tmp_path, "Toy") as writer, pytest.raises(ValueError, match=message):
        writer.add("train", "a", image, label, source="x.png")


def test_duplicate_and_unsafe_ids_are_rejected(tmp_path):
    image, label = _sample(4)
    with DatasetWriter(tmp_path, "Toy") as writer:
        writer.add("train", "a", image, label, source="first")
        with pytest.raises(ValueError, match="occurs twice"):
            writer.add("train", "a", image, label, source="second")
        with pytest.raises(ValueError, match="plain file name"):
            writer.add("train", "../escape", image, label, source="third")
