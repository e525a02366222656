"""MoNuSeg: Aperio XML rasterisation (synthetic and real) and the converter on a synthetic native release."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellseg.data.convert.common import CountMismatchError, verify_manifest
from cellseg.data.convert.monuseg import convert_monuseg, parse_aperio_xml, rasterise_aperio_xml
from cellseg.utils.io import read_image, read_label

MONUSEG_TRAIN_XML_DEFAULT = ("TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1", "TCGA-NH-A8F7-01A-01-TS1")


def aperio_xml(regions: list[list[tuple[float, float]]], mpp: str = "0.2527") -> str:
    body = "".join(
        f'<Region Id="{k}"><Attributes/><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in vertices)
        + "</Vertices></Region>"
        for k, vertices in enumerate(regions, start=1)
    )
    return (f'<Annotations MicronsPerPixel="{mpp}"><Annotation Id="1"><Attributes/><Regions>'
            f"<RegionAttributeHeaders/>{body}</Regions></Annotation></Annotations>")


# Region 1: X 2..5, Y 2..4 (1-based) -> rows 1..3, cols 1..4. Region 2 overlaps it at cols 4..6. Region 3: 2 vertices.
REGIONS = [
    [(2, 2), (5, 2), (5, 4), (2, 4)],
    [(5, 3), (7, 3), (7, 6), (5, 6)],
    [(1, 1), (3, 3)],
]


def expected_label() -> np.ndarray:
    label = np.zeros((8, 9), np.int32)
    label[1:4, 1:5] = 1
    label[2:6, 4:7] = 2  # later region wins on the overlap
    return label


def test_rasterise_synthetic_xml_shift_order_and_skip(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(aperio_xml(REGIONS))
    np.testing.assert_array_equal(rasterise_aperio_xml(path, (8, 9)), expected_label())
    parsed = parse_aperio_xml(path)
    assert len(parsed.polygons) == 2 and parsed.skipped == 1 and parsed.microns_per_pixel == pytest.approx(0.2527)


def test_xml_gz_and_bytes_give_the_same_map(tmp_path):
    text = aperio_xml(REGIONS).encode()
    (tmp_path / "a.xml.gz").write_bytes(gzip.compress(text))
    from_gz = rasterise_aperio_xml(tmp_path / "a.xml.gz", (8, 9))
    np.testing.assert_array_equal(from_gz, expected_label())
    np.testing.assert_array_equal(rasterise_aperio_xml(text, (8, 9)), from_gz)
    np.testing.assert_array_equal(rasterise_aperio_xml(gzip.compress(text), (8, 9)), from_gz)


def test_polygons_are_clipped_to_the_image():
    label = rasterise_aperio_xml(aperio_xml([[(0, 0), (20, 0), (20, 20), (0, 20)]]).encode(), (5, 6))
    assert label.shape == (5, 6) and (label == 1).all()


def test_bad_xml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<Annotations><Region")
    with pytest.raises(ValueError, match=r"bad\.xml: not well-formed XML"):
        rasterise_aperio_xml(bad, (4, 4))
    no_y = tmp_path / "no_y.xml"
    no_y.write_text('<Annotations><Region Id="7"><Vertices><Vertex X="1"/></Vertices></Region></Annotations>')
    with pytest.raises(ValueError, match=r"no_y\.xml: Region Id=7 has a Vertex without numeric X and Y"):
        rasterise_aperio_xml(no_y, (4, 4))
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        rasterise_aperio_xml(tmp_path / "missing.xml", (4, 4))


def _native_release(root, n_train=2, n_test=1):
    rng = np.random.default_rng(0)
    train = root / "MoNuSeg 2018 Training Data"
    (train / "Tissue Images").mkdir(parents=True)
    (train / "Annotations").mkdir()
    test = root / "MoNuSegTestData"
    test.mkdir()
    images = {}
    for k in range(n_train + n_test):
        image_id = f"TCGA-{k:02d}"
        folder_img, folder_xml = ((train / "Tissue Images", train / "Annotations") if k < n_train else (test, test))
        images[image_id] = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
        tifffile.imwrite(folder_img / f"{image_id}.tif", images[image_id])
        regions = REGIONS if k % 2 == 0 else REGIONS[:1]
        (folder_xml / f"{image_id}.xml").write_text(aperio_xml(regions))
    return images


def test_convert_synthetic_release(tmp_path):
    images = _native_release(tmp_path / "native")
    out = convert_monuseg(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert out == tmp_path / "out" / "MoNuSeg"
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["TCGA-00.png", "TCGA-01.png"]
    np.testing.assert_array_equal(read_label(out / "train/labels/TCGA-00.png"), expected_label())
    np.testing.assert_array_equal(read_label(out / "test/labels/TCGA-02.png"), expected_label())
    np.testing.assert_array_equal(read_image(out / "test/images/TCGA-02.png"), images["TCGA-02"])
    index = pd.read_csv(out / "train" / "index.csv")
    assert index[["id", "nuclei", "regions", "overlap_px"]].values.tolist() == [["TCGA-00", 2, 2, 2], ["TCGA-01", 1, 1, 0]]
    assert index["mpp"].tolist() == pytest.approx([0.2527, 0.2527])
    assert (index["modality"] == "histopathology").all()
    assert "CC BY-NC-SA 4.0" in (out / "SOURCE.md").read_text()
    assert verify_manifest(out) == []


def test_convert_checks_official_counts_by_default(tmp_path):
    _native_release(tmp_path / "native")
    with pytest.raises(CountMismatchError, match="split 'train' has 2 images, expected 37 or 30"):
        convert_monuseg(tmp_path / "native", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_convert_errors_on_missing_xml_and_wrong_folder(tmp_path):
    _native_release(tmp_path / "native")
    (tmp_path / "native/MoNuSeg 2018 Training Data/Annotations/TCGA-01.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"no Aperio XML for images \[.*TCGA-01\.tif"):
        convert_monuseg(tmp_path / "native", tmp_path / "out", check_counts=False)
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected one of \['MoNuSeg 2018 Training Data'"):
        convert_monuseg(tmp_path / "elsewhere", tmp_path / "out")


# -- real data --------------------------------------------------------------------------------------------------
def _monuseg(shared_data):
    root = shared_data / "MoNuSeg"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def test_real_test_xml_reproduce_test_labels_exactly(shared_data):
    root = _monuseg(shared_data)
    paths = sorted((root / "test" / "annotations_xml").glob("*.xml.gz"))
    assert len(paths) == 14
    for path in paths:
        reference = read_label(root / "test" / "labels" / f"{path.name[:-len('.xml.gz')]}.png")
        label = rasterise_aperio_xml(path, reference.shape)
        assert np.array_equal(label, reference), path.name


def _train_dice(root, image_id):
    reference = read_label(root / "train" / "labels" / f"{image_id}.png") > 0
    mask = rasterise_aperio_xml(root / "train" / "annotations_xml" / f"{image_id}.xml.gz", reference.shape) > 0
    return 2 * np.count_nonzero(mask & reference) / (np.count_nonzero(mask) + np.count_nonzero(reference))


@pytest.mark.parametrize("image_id", MONUSEG_TRAIN_XML_DEFAULT)
def test_real_train_xml_match_train_labels(shared_data, image_id):
    assert _train_dice(_monuseg(shared_data), image_id) >= 0.94


@pytest.mark.slow
def test_real_all_13_train_xml_match_train_labels(shared_data):
    root = _monuseg(shared_data)
    paths = sorted((root / "train" / "annotations_xml").glob("*.xml.gz"))
    assert len(paths) == 13
    dice = {p.name: _train_dice(root, p.name[: -len(".xml.gz")]) for p in paths}
    assert min(dice.values()) >= 0.94, dice
