"""Slides read at a chosen resolution: pyramid level choice, exact pixels, resolution metadata, both backends."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cellseg.inference.pyramid import write_pyramidal_tiff
from cellseg.inference.slide_reader import SlideError, SlideReader, open_backend, tissue_mask


def gradient_image(height: int = 700, width: int = 900) -> np.ndarray:
    """An RGB image whose every pixel tells where it is (so any misplaced read shows)."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows % 251, cols % 241, (rows + 3 * cols) % 239], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return gradient_image()


@pytest.fixture(scope="module")
def generic_tiff(tmp_path_factory, image):
    path = tmp_path_factory.mktemp("slides") / "generic.tif"
    write_pyramidal_tiff(path, image, mpp=0.25, levels=3, tile=128)
    return path


@pytest.mark.parametrize("backend", ["tiffslide", "openslide"])
def test_level_zero_reads_the_stored_pixels(generic_tiff, image, backend):
    reader = SlideReader(generic_tiff, target_mpp=0.25, backend=backend)
    assert reader.geometry.slide_mpp == pytest.approx(0.25) and reader.shape == image.shape[:2]
    np.testing.assert_array_equal(reader.read(123, 457, 200, 301), image[123:323, 457:758])


@pytest.mark.parametrize("backend", ["tiffslide", "openslide"])
def test_a_coarser_target_reads_the_matching_pyramid_level(generic_tiff, image, backend):
    reader = SlideReader(generic_tiff, target_mpp=0.5, backend=backend)
    assert reader.geometry.scale == pytest.approx(2.0) and reader.level_for(2.0) == 1
    assert reader.shape == (350, 450)
    np.testing.assert_array_equal(reader.read(10, 20, 100, 120), image[::2, ::2][10:110, 20:140])


def test_between_levels_the_finer_level_is_resampled(generic_tiff, image):
    reader = SlideReader(generic_tiff, target_mpp=0.375)  # 1.5 level-0 px per analysis px: from level 0
    assert reader.level_for(1.5) == 0 and reader.shape == (466, 600)
    region = reader.read(0, 0, 466, 600).astype(float)
    expected = np.asarray(Image.fromarray(image).resize((600, 466), Image.Resampling.BILINEAR,
                                                        box=(0, 0, 900, 699)), dtype=float)
    assert np.abs(region - expected).mean() < 1.0


def test_ome_tiff_resolution_comes_from_its_metadata(tmp_path, image):
    path = tmp_path / "slide.ome.tif"
    write_pyramidal_tiff(path, image, mpp=0.5, levels=2, layout="ome")
    reader = SlideReader(path, target_mpp=0.5)
    assert reader.geometry.slide_mpp == pytest.approx(0.5) and reader.geometry.scale == pytest.approx(1.0)
    np.testing.assert_array_equal(reader.read(5, 7, 30, 40), image[5:35, 7:47])
    upsampled = SlideReader(path, target_mpp=0.25)  # finer than the slide: level 0, upsampled 2x
    assert upsampled.shape == (1400, 1800)


def test_a_slide_without_resolution_needs_infer_slide_mpp(tmp_path, image):
    import tifffile

    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb")
    with pytest.raises(SlideError, match=r"infer\.slide\.mpp"):
        SlideReader(path, target_mpp=0.25)
    reader = SlideReader(path, target_mpp=0.5, mpp=0.25)
    assert reader.shape == (350, 450)
    assert SlideReader(path).geometry.scale == 1.0  # no target: level 0 as it is


def test_unknown_backend_and_unreadable_files_name_the_problem(tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide")
    with pytest.raises(SlideError, match="broken.svs"):
        open_backend(broken)
    with pytest.raises(SlideError, match="backend"):
        open_backend(broken, backend="bioformats")
    with pytest.raises(FileNotFoundError, match="missing.ndpi"):
        open_backend(tmp_path / "missing.ndpi")


def test_reader_survives_pickling_for_dataloader_workers(generic_tiff, image):
    import pickle

    reader = SlideReader(generic_tiff, target_mpp=0.25)
    reader.read(0, 0, 8, 8)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(50, 60, 10, 10), image[50:60, 60:70])


def test_tissue_mask_separates_stained_tissue_from_glass():
    thumbnail = np.full((60, 80, 3), 242, dtype=np.uint8)
    thumbnail[10:40, 20:50] = (150, 60, 160)  # purple tissue
    mask = tissue_mask(thumbnail)
    assert mask[10:40, 20:50].all() and mask.sum() == 30 * 30


def test_resampling_at_the_slide_border_repeats_the_edge_pixel(generic_tiff, image):
    reader = SlideReader(generic_tiff, target_mpp=0.375)  # 900 / 1.5 = 600 columns, the last one at the border
    edge = reader.read(0, 590, 40, 10).astype(int)
    expected = np.asarray(Image.fromarray(image).resize((600, 466), Image.Resampling.BILINEAR,
                                                        box=(0, 0, 900, 699)), dtype=int)[:40, 590:600]
    assert np.abs(edge - expected).max() <= 2  # no black (out-of-slide) pixels blended in


def test_thumbnail_is_read_in_strips_to_the_same_image(generic_tiff, image):
    reader = SlideReader(generic_tiff, target_mpp=0.25)
    thumbnail, factor = reader.thumbnail(max_side=600)  # 466 rows: two strips, resampled at 1.5 px
    assert factor == 1.5 and thumbnail.shape == (466, 600, 3)
    np.testing.assert_array_equal(thumbnail, reader.read(0, 0, 466, 600, scale=1.5))


def test_a_region_is_resampled_as_the_same_part_of_the_whole_grid(generic_tiff):
    reader = SlideReader(generic_tiff, target_mpp=0.375)
    whole = reader.read(0, 0, *reader.shape)
    np.testing.assert_array_equal(reader.read(101, 203, 57, 66), whole[101:158, 203:269])
