"""MoNuSAC: per-class XML annotations -> class-agnostic ids, classes CSV, ambiguous -> ignore mask, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellseg.data.convert.common import verify_manifest
from cellseg.data.convert.monusac import convert_monusac, parse_monusac_xml
from cellseg.utils.io import read_label


def _region(vertices):
    return ("<Region><Vertices>" + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in vertices)
            + "</Vertices></Region>")


def monusac_xml(annotations: dict[str, list]) -> str:
    body = "".join(
        f'<Annotation Id="{k}"><Attributes><Attribute Name="{name}" Id="0" Value=""/></Attributes><Regions>'
        + "".join(_region(v) for v in regions) + "</Regions></Annotation>"
        for k, (name, regions) in enumerate(annotations.items(), start=1)
    )
    return f"<Annotations>{body}</Annotations>"


ANNOTATIONS = {
    "Epithelial": [[(1, 1), (3, 1), (3, 2), (1, 2)], [(6, 6), (7, 6)]],  # the second has 2 vertices: skipped
    "Lymphocyte": [[(5, 1), (7, 1), (7, 3), (5, 3)]],
    "Ambiguous": [[(1, 5), (2, 5), (2, 6), (1, 6)]],
}


def _expected():
    label = np.zeros((7, 8), np.int32)
    label[0:2, 0:3] = 1
    label[0:3, 4:7] = 2
    ignore = np.zeros((7, 8), np.uint8)
    ignore[4:6, 0:2] = 1
    return label, ignore


def _native_release(root):
    rng = np.random.default_rng(0)
    for split, patient in [("MoNuSAC_images_and_annotations", "TCGA-P1"), ("MoNuSAC Testing Data and Annotations", "TCGA-P2")]:
        folder = root / split / patient
        folder.mkdir(parents=True)
        for k in (1, 2):
            tifffile.imwrite(folder / f"{patient}_{k}.tif", rng.integers(0, 256, (7, 8, 3), dtype=np.uint8))
            (folder / f"{patient}_{k}.xml").write_text(monusac_xml(ANNOTATIONS))


def test_parse_monusac_xml_classes_and_ambiguous():
    parsed = parse_monusac_xml(monusac_xml(ANNOTATIONS).encode())
    assert parsed.classes == ["Epithelial", "Lymphocyte"] and len(parsed.ambiguous) == 1


def test_convert_synthetic_release(tmp_path):
    _native_release(tmp_path / "native")
    out = convert_monusac(tmp_path / "native", tmp_path / "out")
    label, ignore = _expected()
    np.testing.assert_array_equal(read_label(out / "train/labels/TCGA-P1_1.png"), label)
    np.testing.assert_array_equal(read_label(out / "test/labels/TCGA-P2_2_ignore.png"), ignore)
    index = pd.read_csv(out / "test" / "index.csv")
    assert index[["id", "nuclei", "patient", "ambiguous_regions"]].values.tolist() == [
        ["TCGA-P2_1", 2, "TCGA-P2", 1], ["TCGA-P2_2", 2, "TCGA-P2", 1]]
    classes = pd.read_csv(out / "train" / "instance_classes.csv")
    assert classes[classes["id"] == "TCGA-P1_2"][["instance", "class"]].values.tolist() == [[1, "Epithelial"],
                                                                                           [2, "Lymphocyte"]]
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["TCGA-P1_1.png", "TCGA-P1_2.png"]
    assert verify_manifest(out) == []


def test_unknown_class_and_svs_only_are_errors(tmp_path):
    _native_release(tmp_path / "native")
    xml = tmp_path / "native/MoNuSAC_images_and_annotations/TCGA-P1/TCGA-P1_2.xml"
    xml.write_text(monusac_xml({"Fibroblast": [[(1, 1), (2, 1), (2, 2)]]}))
    with pytest.raises(ValueError, match=r"TCGA-P1_2\.xml: unknown class 'Fibroblast'"):
        convert_monusac(tmp_path / "native", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    xml.write_text(monusac_xml(ANNOTATIONS))
    tif = xml.with_suffix(".tif")
    tif.rename(xml.with_suffix(".svs"))
    with pytest.raises(ValueError, match=r"TCGA-P1_2\.svs: only an \.svs image .*\(convert \.svs to \.tif first\)"):
        convert_monusac(tmp_path / "native", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"expected one of \['MoNuSAC_images_and_annotations'"):
        convert_monusac(tmp_path / "native" / "MoNuSAC_images_and_annotations", tmp_path / "out")
