"""Instance writers: label TIFF round trip, QuPath GeoJSON geometry and fields, per-nucleus CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
import tifffile
from shapely.geometry import shape
from skimage.color import rgb2hed
from skimage.draw import disk, ellipse, polygon

from cellseg.inference.writers import (
    instances_table,
    instances_to_geojson,
    write_geojson,
    write_instance_tiff,
    write_instances_csv,
)
from cellseg.utils.io import read_image, read_label

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MONUSEG_ID = "TCGA-18-5592-01Z-00-DX1"


def _ellipses() -> np.ndarray:
    """Non-overlapping rotated ellipses on a grid, plus an annulus (hole) and a two-piece instance."""
    rng = np.random.default_rng(7)
    label = np.zeros((180, 200), dtype=np.int32)
    next_id = 1
    for row in range(20, 140, 30):
        for col in range(20, 200, 30):
            r_radius, c_radius = rng.integers(4, 13, size=2)
            rr, cc = ellipse(row, col, r_radius, c_radius, shape=label.shape, rotation=rng.uniform(0, np.pi))
            label[rr, cc] = next_id
            next_id += 1
    label[disk((160, 40), 14, shape=label.shape)] = next_id
    label[disk((160, 40), 6, shape=label.shape)] = 0  # annulus
    label[150:158, 100:110] = next_id + 1
    label[163:170, 120:135] = next_id + 1  # second piece of the same instance
    return label


def _rasterise(geometry, shape_hw) -> np.ndarray:
    """Pixels whose centres (index + 0.5 in continuous coordinates) fall inside the polygons."""
    out = np.zeros(shape_hw, dtype=bool)
    polygons = getattr(geometry, "geoms", [geometry])
    for poly in polygons:
        x, y = np.asarray(poly.exterior.coords).T
        out[polygon(y - 0.5, x - 0.5, shape_hw)] = True
    for poly in polygons:
        for hole in poly.interiors:
            x, y = np.asarray(hole.coords).T
            out[polygon(y - 0.5, x - 0.5, shape_hw)] = False
    return out


def _rings(geometry: dict) -> list[list]:
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    return [ring for poly in polygons for ring in poly]


def _check_collection(collection: dict, label: np.ndarray, min_iou: float = 0.9) -> None:
    ids = np.unique(label[label > 0])
    features = collection["features"]
    assert collection["type"] == "FeatureCollection"
    assert sorted(f["properties"]["measurements"]["instance_id"] for f in features) == list(ids)
    for feature in features:
        props = feature["properties"]
        assert feature["type"] == "Feature"
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] == "Nucleus" and len(props["classification"]["color"]) == 3
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        for ring in _rings(feature["geometry"]):
            assert len(ring) >= 4 and ring[0] == ring[-1]
        geometry = shape(feature["geometry"])
        assert geometry.is_valid
        instance = label == props["measurements"]["instance_id"]
        assert props["measurements"]["area"] == instance.sum()
        raster = _rasterise(geometry, label.shape)
        iou = (raster & instance).sum() / (raster | instance).sum()
        assert iou >= min_iou, f"instance {props['measurements']['instance_id']}: IoU {iou:.3f}"


@pytest.mark.parametrize(("top_id", "dtype"), [(500, np.uint16), (70_000, np.uint32)])
def test_tiff_round_trip_is_exact(tmp_path, top_id, dtype):
    label = np.zeros((300, 300), dtype=np.int64)
    label.ravel()[5 : 5 + top_id] = np.random.default_rng(0).permutation(top_id) + 1
    path = tmp_path / "labels" / "img.tif"
    write_instance_tiff(path, label, mpp=0.25)
    back = tifffile.imread(path)
    assert back.dtype == dtype
    assert np.array_equal(back, label)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.resolution == pytest.approx((40_000.0, 40_000.0))
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
    assert [p.name for p in path.parent.iterdir()] == ["img.tif"]  # no temporary file left behind


def test_tiff_makes_ids_contiguous_and_rejects_bad_input(tmp_path):
    label = np.zeros((10, 10), dtype=np.int32)
    label[1:3, 1:3], label[5:8, 5:8] = 7, 300
    write_instance_tiff(tmp_path / "a.tif", label)
    back = tifffile.imread(tmp_path / "a.tif")
    assert sorted(np.unique(back)) == [0, 1, 2]
    assert np.array_equal(back == 1, label == 7) and np.array_equal(back == 2, label == 300)
    with pytest.raises(ValueError, match="2-D integer"):
        write_instance_tiff(tmp_path / "b.tif", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="mpp"):
        write_instance_tiff(tmp_path / "c.tif", label, mpp=0)
    assert not (tmp_path / "b.tif").exists() and not (tmp_path / "c.tif").exists()


def test_geojson_polygons_match_synthetic_instances(tmp_path):
    label = _ellipses()
    n = int(label.max())
    scores = {i: i / 100 for i in range(1, n + 1)}
    path = tmp_path / "out" / "img.geojson"
    write_geojson(path, label, scores=scores)
    collection = json.loads(path.read_text())
    _check_collection(collection, label)
    by_id = {f["properties"]["measurements"]["instance_id"]: f for f in collection["features"]}
    assert by_id[5]["properties"]["measurements"]["score"] == pytest.approx(0.05)
    annulus, two_piece = by_id[n - 1]["geometry"], by_id[n]["geometry"]
    assert annulus["type"] == "Polygon" and len(annulus["coordinates"]) == 2  # exterior + hole
    assert two_piece["type"] == "MultiPolygon" and len(two_piece["coordinates"]) == 2


def test_geojson_coordinates_are_x_column_y_row_with_offset():
    label = np.zeros((30, 40), dtype=np.int32)
    label[5:10, 20:32] = 1  # wide rectangle: rows 5..9, columns 20..31
    feature = instances_to_geojson(label, offset_xy=(1000, 2000))["features"][0]
    xs, ys = np.asarray(feature["geometry"]["coordinates"][0]).T
    assert xs.min() == pytest.approx(1020, abs=0.51) and xs.max() == pytest.approx(1032, abs=0.51)
    assert ys.min() == pytest.approx(2005, abs=0.51) and ys.max() == pytest.approx(2010, abs=0.51)
    # Unsimplified marching squares: 60 px minus a 1/8 px triangle at each of the 4 convex corners.
    exact = instances_to_geojson(label, simplify=0)["features"][0]
    assert shapely.geometry.shape(exact["geometry"]).area == pytest.approx(60 - 4 / 8)
    assert "score" not in feature["properties"]["measurements"]


def test_geojson_matches_real_monuseg_crop():
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data folder {DATA_DIR} not found")
    label = read_label(DATA_DIR / "MoNuSeg" / "train" / "labels" / f"{MONUSEG_ID}.png")[:256, :256]
    collection = instances_to_geojson(label)
    assert len(collection["features"]) == len(np.unique(label[label > 0]))
    _check_collection(collection, label)


def test_csv_one_row_per_instance_with_areas_centroids_scores_and_stain(tmp_path):
    label = _ellipses()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(*label.shape, 3), dtype=np.uint8)
    ids = np.unique(label[label > 0])
    scores = np.linspace(0.1, 0.9, len(ids))
    path = tmp_path / "img.csv"
    write_instances_csv(path, label, "img", image=image, scores=scores)
    table = pd.read_csv(path)
    assert len(table) == len(ids) and list(table["instance_id"]) == list(ids)
    assert (table["image_id"] == "img").all() and (table["class"] == "Nucleus").all()
    hematoxylin = rgb2hed(image)[..., 0]
    for row in table.itertuples():
        rows, cols = np.nonzero(label == row.instance_id)
        assert row.area == len(rows)
        assert row.centroid_x == pytest.approx(cols.mean() + 0.5) and row.centroid_y == pytest.approx(
            rows.mean() + 0.5
        )
        assert (row.bbox_x0, row.bbox_y0, row.bbox_x1, row.bbox_y1) == (
            cols.min(),
            rows.min(),
            cols.max() + 1,
            rows.max() + 1,
        )
        assert row.mean_stain == pytest.approx(hematoxylin[rows, cols].mean())
    np.testing.assert_allclose(table["score"], scores)


def test_table_with_grey_image_without_scores_and_errors():
    label = np.zeros((12, 12), dtype=np.int32)
    label[2:5, 2:5], label[7:11, 6:9] = 3, 8
    grey = np.arange(144, dtype=np.float64).reshape(12, 12)
    table = instances_table(label, "g", image=grey)
    assert list(table["area"]) == [9, 12]
    assert table["mean_stain"].iloc[0] == pytest.approx(grey[2:5, 2:5].mean())
    assert table["score"].isna().all()
    assert instances_table(label, "g")["mean_stain"].isna().all()
    with pytest.raises(ValueError, match="scores for 2 instances"):
        instances_table(label, "g", scores=[0.5])
    with pytest.raises(ValueError, match="does not match"):
        instances_table(label, "g", image=np.zeros((5, 5, 3), dtype=np.uint8))


def test_csv_on_real_monuseg_crop_uses_hematoxylin(tmp_path):
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data folder {DATA_DIR} not found")
    image = read_image(DATA_DIR / "MoNuSeg" / "train" / "images" / f"{MONUSEG_ID}.png")[:128, :128]
    label = read_label(DATA_DIR / "MoNuSeg" / "train" / "labels" / f"{MONUSEG_ID}.png")[:128, :128]
    table = write_instances_csv(tmp_path / "m.csv", label, MONUSEG_ID, image=image)
    assert len(table) == len(np.unique(label[label > 0]))
    assert table["area"].sum() == (label > 0).sum()
    # Nuclei are hematoxylin-rich: their mean H density exceeds the background's.
    background_h = rgb2hed(image)[..., 0][label == 0].mean()
    assert table["mean_stain"].mean() > background_h
