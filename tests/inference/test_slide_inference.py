"""Whole-slide inference: chunked = untiled for a local detector, slide coordinates and µm, QuPath GeoJSON,
background chunks skipped, an interrupted slide resumed to the same files, a finished slide skipped.

The "model" is exact and local (connected components of dark pixels), so any difference from the untiled
segmentation of the whole slide is the chunking's fault (stardist-style hand-built scenes).
"""

from __future__ import annotations

import json
import numbers

import numpy as np
import pandas as pd
import pytest
import shapely.geometry
import tifffile
from scipy import ndimage as ndi

from cellseg.inference.pyramid import write_pyramidal_tiff
from cellseg.inference.slide_inference import SlideSegmentation, SlideSettings, chunk_grid
from cellseg.inference.slide_reader import SlideReader
from cellseg.inference.stitching import relabel_raster

SETTINGS = SlideSettings(chunk=192, margin=32, min_tissue=0.0, overlay=True)  # windows 256, overlap 64


def dark_components(rgb: np.ndarray):
    labels, _ = ndi.label(rgb.mean(axis=-1) < 128)
    return labels, None


def disc_slide(height: int, width: int, centres: list[tuple[int, int]], diameter: int) -> np.ndarray:
    image = np.full((height, width, 3), 240, dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    for row, col in centres:
        image[(rows - row) ** 2 + (cols - col) ** 2 <= (diameter / 2 - 0.5) ** 2] = (90, 30, 120)
    return image


def border_centres(shape: tuple[int, int], settings: SlideSettings) -> list[tuple[int, int]]:
    """Disc centres on and around every owned-region border and corner of the chunk grid."""
    _, owned = chunk_grid(shape, settings)
    edges_r = sorted({r.start for r, _ in owned} - {0})
    edges_c = sorted({c.start for _, c in owned} - {0})
    centres = [(r + dr, c + dc) for r in edges_r for c in edges_c for dr, dc in ((0, 0), (-1, 30), (31, -2))]
    centres += [(r, 60) for r in edges_r] + [(45, c + 1) for c in edges_c]
    return [(r, c) for r, c in centres if 12 <= r < shape[0] - 12 and 12 <= c < shape[1] - 12]


@pytest.fixture(scope="module")
def border_slide(tmp_path_factory):
    shape = (700, 820)
    image = disc_slide(*shape, border_centres(shape, SETTINGS), diameter=17)
    path = tmp_path_factory.mktemp("slide") / "borders.tif"
    write_pyramidal_tiff(path, image, mpp=0.25, levels=2, tile=128)
    return path, image


def run_slide(path, out, settings=SETTINGS, segment=dark_components, target_mpp=0.25, slide_id="slide"):
    reader = SlideReader(path, target_mpp=target_mpp)
    return SlideSegmentation(reader, segment, out, settings, slide_id).run(progress=False)


def test_chunked_slide_equals_the_untiled_segmentation(border_slide, tmp_path):
    path, image = border_slide
    summary = run_slide(path, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "slide.csv")
    labels, count = ndi.label(image.mean(axis=-1) < 128)
    assert summary["nuclei"] == count == len(table) and summary["chunks"] > 9
    centroids = ndi.center_of_mass(np.ones_like(labels), labels, range(1, count + 1))
    expected = sorted((round(c + 0.5, 6), round(r + 0.5, 6)) for r, c in centroids)
    got = sorted(zip(table["centroid_x"].round(6), table["centroid_y"].round(6), strict=True))
    assert got == expected  # every nucleus once, whole (same centroid), none duplicated
    assert sorted(table["area"]) == sorted(np.bincount(labels.ravel())[1:])
    assert list(table["instance_id"]) == list(range(1, count + 1))


def test_dataloader_workers_read_the_chunks_to_the_same_files(border_slide, tmp_path):
    path, _ = border_slide
    run_slide(path, tmp_path / "main", SlideSettings(chunk=192, margin=32, min_tissue=0.0, overlay=False))
    run_slide(path, tmp_path / "workers", SlideSettings(chunk=192, margin=32, min_tissue=0.0, overlay=False,
                                                       num_workers=2))
    for name in ("slide.csv", "slide.geojson"):
        assert (tmp_path / "workers" / name).read_bytes() == (tmp_path / "main" / name).read_bytes(), name


def test_label_tiles_rebuild_the_slide_instance_map_with_the_tables_ids(border_slide, tmp_path):
    path, image = border_slide
    settings = SlideSettings(chunk=192, margin=32, min_tissue=0.0, overlay=False, labels=True)
    run_slide(path, tmp_path / "out", settings)
    index = pd.read_csv(tmp_path / "out" / "labels" / "index.csv")
    canvas = np.zeros(image.shape[:2], dtype=np.uint32)
    for tile in index.itertuples():
        label = tifffile.imread(tmp_path / "out" / "labels" / tile.file)
        assert label.shape == (tile.height, tile.width)
        target = canvas[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
        assert not (target[label > 0] > 0).any()  # each nucleus lives in one tile only
        target[label > 0] = label[label > 0]
    expected, _ = ndi.label(image.mean(axis=-1) < 128)
    np.testing.assert_array_equal(relabel_raster(canvas.astype(np.int64)), relabel_raster(expected))
    table = pd.read_csv(tmp_path / "out" / "slide.csv")
    rows, cols = np.floor(table.centroid_y).astype(int), np.floor(table.centroid_x).astype(int)
    assert (canvas[rows, cols] == table.instance_id).all()  # the tiles carry the table's ids


def test_a_region_of_interest_is_segmented_alone_in_slide_coordinates(border_slide, tmp_path):
    path, image = border_slide
    x, y, width, height = 150, 90, 430, 380
    settings = SlideSettings(chunk=192, margin=32, min_tissue=0.0, overlay=False, roi=(x, y, width, height))
    summary = run_slide(path, tmp_path / "out", settings)
    assert summary["analysis_origin"] == [y, x] and summary["analysis_shape"] == [height, width]
    labels, count = ndi.label(image[y:y + height, x:x + width].mean(axis=-1) < 128)
    centroids = ndi.center_of_mass(np.ones_like(labels), labels, range(1, count + 1))
    table = pd.read_csv(tmp_path / "out" / "slide.csv")
    got = sorted(zip(table["centroid_x"].round(6), table["centroid_y"].round(6), strict=True))
    assert got == sorted((round(c + 0.5 + x, 6), round(r + 0.5 + y, 6)) for r, c in centroids)
    calls = []
    run_slide(path, tmp_path / "out", settings, segment=lambda rgb: calls.append(1) or dark_components(rgb))
    assert calls == []  # done.json matched, roi included: nothing segmented again
    with pytest.raises(ValueError, match="outside the slide"):
        run_slide(path, tmp_path / "far", SlideSettings(chunk=192, margin=32, roi=(5000, 0, 10, 10)))


def test_slide_coordinates_and_micrometres_at_a_coarser_analysis_resolution(tmp_path):
    centres = [(200, 240), (520, 610), (903, 130)]
    image = disc_slide(1100, 900, centres, diameter=40)  # 40 px at 0.25 µm/px = 10 µm
    path = tmp_path / "coarse.tif"
    write_pyramidal_tiff(path, image, mpp=0.25, levels=3, tile=128)
    summary = run_slide(path, tmp_path / "out", SlideSettings(chunk=224, margin=16, min_tissue=0.0, overlay=False),
                        target_mpp=0.5)
    assert summary["scale"] == 2.0 and summary["analysis_shape"] == [550, 450]
    table = pd.read_csv(tmp_path / "out" / "slide.csv").sort_values("centroid_y")
    radius = 40 / 2 - 0.5  # disc_slide's radius, level-0 px
    for (row, col), (_, nucleus) in zip(sorted(centres), table.iterrows(), strict=True):
        assert nucleus.centroid_x == pytest.approx(col + 0.5, abs=1.0)  # level-0 pixels
        assert nucleus.centroid_y == pytest.approx(row + 0.5, abs=1.0)
        assert nucleus.centroid_x_um == pytest.approx(nucleus.centroid_x * 0.25)
        assert nucleus.area_um2 == pytest.approx(np.pi * (radius * 0.25) ** 2, rel=0.05)
        assert nucleus.perimeter_um == pytest.approx(2 * np.pi * radius * 0.25, rel=0.1)
        assert nucleus.bbox_x0 <= col <= nucleus.bbox_x1 and nucleus.bbox_y0 <= row <= nucleus.bbox_y1
    features = json.loads((tmp_path / "out" / "slide.geojson").read_text())["features"]
    for feature in features:
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.area == pytest.approx(np.pi * radius**2, rel=0.05)  # level-0 px²
        assert feature["properties"]["measurements"]["area_um2"] == pytest.approx(np.pi * (radius * 0.25) ** 2,
                                                                                  rel=0.05)


def check_qupath_feature_collection(collection: dict) -> None:
    """QuPath's GeoJSON import format (qupath.lib.io.GsonTools): a FeatureCollection of Features whose
    geometry is a Polygon or MultiPolygon of closed rings, with properties objectType (detection|annotation),
    classification {name, color [r, g, b]} and measurements {name: number}."""
    assert collection["type"] == "FeatureCollection" and isinstance(collection["features"], list)
    for feature in collection["features"]:
        assert feature["type"] == "Feature"
        geometry = feature["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon")
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for polygon in polygons:
            for ring in polygon:
                assert len(ring) >= 4 and ring[0] == ring[-1]
                assert all(len(p) == 2 and all(isinstance(v, numbers.Real) for v in p) for p in ring)
        assert shapely.geometry.shape(geometry).is_valid
        properties = feature["properties"]
        assert properties["objectType"] in ("detection", "annotation")
        classification = properties["classification"]
        assert isinstance(classification["name"], str)
        assert len(classification["color"]) == 3 and all(0 <= c <= 255 for c in classification["color"])
        assert all(isinstance(k, str) and isinstance(v, numbers.Real) for k, v in properties["measurements"].items())


def test_slide_geojson_is_a_qupath_detection_collection_matching_the_table(border_slide, tmp_path):
    path, _ = border_slide
    run_slide(path, tmp_path / "out")
    collection = json.loads((tmp_path / "out" / "slide.geojson").read_text())
    check_qupath_feature_collection(collection)
    table = pd.read_csv(tmp_path / "out" / "slide.csv").set_index("instance_id")
    assert len(collection["features"]) == len(table)
    for feature in collection["features"]:
        nucleus = table.loc[feature["properties"]["measurements"]["instance_id"]]
        assert shapely.geometry.shape(feature["geometry"]).contains(
            shapely.geometry.Point(nucleus.centroid_x, nucleus.centroid_y))
    assert (tmp_path / "out" / "overlay.png").is_file() and (tmp_path / "out" / "thumbnail.png").is_file()


def test_background_chunks_are_skipped_without_being_segmented(tmp_path):
    image = disc_slide(640, 1280, [(100, 100), (150, 180), (300, 120)], diameter=15)
    glass = (image == 240).all(axis=-1)
    glass[:, 400:] = False
    image[glass] = (230, 150, 200)  # pink tissue on the left third, glass on the rest
    path = tmp_path / "mostly_glass.tif"
    write_pyramidal_tiff(path, image, mpp=0.25, levels=2, tile=128)
    seen = []

    def counting(rgb):
        seen.append(rgb.shape)
        return dark_components(rgb)

    summary = run_slide(path, tmp_path / "out", SlideSettings(chunk=192, margin=32, min_tissue=0.05), counting)
    assert summary["chunks_skipped"] > 0 and len(seen) == summary["chunks_with_tissue"] < summary["chunks"]
    assert summary["nuclei"] == 3


class Interrupted(RuntimeError):
    pass


def test_an_interrupted_slide_resumes_to_the_same_files_and_a_finished_one_is_skipped(border_slide, tmp_path):
    path, _ = border_slide
    run_slide(path, tmp_path / "whole")
    calls = []

    def failing_after_three(rgb):
        if len(calls) == 3:
            raise Interrupted("killed")
        calls.append(1)
        return dark_components(rgb)

    with pytest.raises(Interrupted):
        run_slide(path, tmp_path / "resumed", segment=failing_after_three)
    parts = sorted((tmp_path / "resumed" / "parts").glob("*.csv"))
    assert len(parts) == 3 and not (tmp_path / "resumed" / "done.json").exists()
    resumed_calls = []

    def counting(rgb):
        resumed_calls.append(1)
        return dark_components(rgb)

    summary = run_slide(path, tmp_path / "resumed", segment=counting)
    assert len(resumed_calls) == summary["chunks"] - 3 == summary["chunks_this_run"]
    for name in ("slide.csv", "slide.geojson"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not (tmp_path / "resumed" / "parts").exists()

    run_slide(path, tmp_path / "resumed", segment=counting)
    assert len(resumed_calls) == summary["chunks"] - 3  # finished: nothing segmented again
    changed = SlideSettings(chunk=160, margin=48, min_tissue=0.0)
    assert run_slide(path, tmp_path / "resumed", changed, counting)["chunks_this_run"] > 0  # other settings: redone


def test_chunk_settings_are_checked():
    with pytest.raises(ValueError, match="infer.slide"):
        SlideSettings(chunk=100, margin=10).check()  # 120 is not a multiple of 32
    with pytest.raises(ValueError, match="min_tissue"):
        SlideSettings(min_tissue=2.0).check()
