"""Per-image intensity stretch and bit depth: percentiles to 0/255, flat images untouched, 8-bit images exactly
as before, 12-bit data kept whole, bad settings named."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cellseg.data import NucleiDataModule
from cellseg.data.intensity import (
    check_bit_depth,
    check_stretch,
    load_image,
    prepare_image,
    stretch_intensity,
    to_model_range,
)
from cellseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalise, to_normalised_tensor
from cellseg.utils.io import read_image, write_label


def test_a_dim_image_is_stretched_to_the_full_range_keeping_its_order():
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 12, size=(40, 50, 3)).astype(np.uint8)
    stretched = stretch_intensity(dim, (0.0, 100.0))
    assert stretched.dtype == np.uint8 and stretched.min() == 0 and stretched.max() == 255
    order = np.argsort(dim.ravel(), kind="stable")
    assert (np.diff(stretched.ravel()[order].astype(int)) >= 0).all()


def test_values_outside_the_percentiles_are_clipped():
    ramp = np.repeat(np.arange(100, dtype=np.uint8)[None, :, None], 3, axis=2)
    stretched = stretch_intensity(ramp, (10.0, 90.0))
    low, high = np.percentile(ramp, (10.0, 90.0))
    assert (stretched[ramp <= low] == 0).all() and (stretched[ramp >= high] == 255).all()
    assert 0 < stretched[0, 50, 0] < 255


def test_off_and_flat_images_are_returned_unchanged():
    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    assert stretch_intensity(image, None) is image
    np.testing.assert_array_equal(stretch_intensity(image, (1.0, 99.8)), image)


@pytest.mark.parametrize("bad", [[99.8, 1.0], [1.0], [-1.0, 50.0], [1.0, 101.0]])
def test_bad_percentiles_name_the_key(bad):
    with pytest.raises(ValueError, match=r"data.stretch_percentiles"):
        check_stretch(bad)


def test_the_data_module_stretches_whole_images_and_refuses_bad_settings(sample_data):
    kwargs = dict(name="sample", root=str(sample_data), dataset="MoNuSegSample")
    plain = NucleiDataModule(**kwargs).whole_image_dataset("test", with_labels=False)[0]["image"]
    stretched = NucleiDataModule(**kwargs, stretch_percentiles=[1, 99.8]).whole_image_dataset("test", False)[0]["image"]
    np.testing.assert_array_equal(denormalise(stretched), stretch_intensity(denormalise(plain), (1.0, 99.8)))
    with pytest.raises(ValueError, match="stretch_percentiles"):
        NucleiDataModule(**kwargs, stretch_percentiles=[50, 10])


def test_training_images_are_stretched_once_when_loaded(sample_data):
    from cellseg.data.weak import FullLabels

    dm = NucleiDataModule(name="sample", root=str(sample_data), dataset="MoNuSegSample", weak_labels=FullLabels(),
                          stretch_percentiles=[2, 98])
    dm.configure_targets(lambda raw, kind, shape: (raw > 0).astype(np.uint8), ignore_index=255)
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    first = read_image(dm.layout("train").image_path(dataset.ids[0]))
    np.testing.assert_array_equal(dataset.images[0], stretch_intensity(first, (2.0, 98.0)))
    assert not np.array_equal(dataset.images[0], first)


# ----- bit depth ---------------------------------------------------------------------------------------------------
def twelve_bit_rgb(height: int = 64, width: int = 64) -> np.ndarray:
    """uint16 RGB holding every 12-bit grey level 0..4095 in each channel."""
    grey = (np.arange(height * width) % 4096).astype(np.uint16).reshape(height, width)
    return np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)


def old_normalise(image: np.ndarray) -> torch.Tensor:
    """The 8-bit path as it was before bit depths existed (to_normalised_tensor of uint8), kept verbatim."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    return (tensor - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def old_stretch(image: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """The uint8 stretch as it was, kept verbatim."""
    low, high = np.percentile(image, percentiles)
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# sha256 of the normalised float32 tensors of the sample's test images, measured before bit depths existed
SAMPLE_TEST_SHA256 = {
    None: "a3814726ca69edcb2510778a0e89365c32d1bac91e8f104d15f90c66839061e2",
    (1.0, 99.8): "360644fd1634af1b4b87d4d7f7d62cc840cbadf97afaa0d3081db37ec24561c1",
}


@pytest.mark.parametrize("stretch", [None, (1.0, 99.8)])
def test_8bit_images_reach_the_network_bit_for_bit_as_before(sample_data, stretch):
    dm = NucleiDataModule(name="sample", root=str(sample_data), dataset="MoNuSegSample",
                          stretch_percentiles=list(stretch) if stretch else None)
    dataset = dm.whole_image_dataset("test", with_labels=False)
    digest = hashlib.sha256()
    for index, path in enumerate(dataset.image_paths):
        stored = read_image(path)
        assert stored.dtype == np.uint8
        expected = old_normalise(old_stretch(stored, stretch) if stretch else stored)
        got = dataset[index]["image"]
        assert got.dtype == torch.float32 and torch.equal(got, expected), path.name
        digest.update(got.numpy().tobytes())
    assert digest.hexdigest() == SAMPLE_TEST_SHA256[stretch]


def test_8bit_training_crops_stay_uint8_through_colour_jitter(sample_data):
    from cellseg.data.transforms import AugmentConfig, colour_jitter

    stored = read_image(sorted((sample_data / "MoNuSegSample" / "test" / "images").iterdir())[0])
    image, depth = prepare_image(stored, None, (1.0, 99.8))
    assert depth == 8 and image.dtype == np.uint8
    np.testing.assert_array_equal(image, old_stretch(stored, (1.0, 99.8)))
    jittered = colour_jitter(torch.from_numpy(image).permute(2, 0, 1).contiguous(), np.random.default_rng(1),
                             AugmentConfig(colour_p=1.0))
    assert jittered.dtype == torch.uint8
    assert torch.equal(to_normalised_tensor(jittered), old_normalise(jittered.permute(1, 2, 0).numpy()))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_12bit_data_in_16bit_files_keeps_every_grey_level_to_the_network(tmp_path, suffix):
    rgb = twelve_bit_rgb()
    path = tmp_path / f"x{suffix}"
    if suffix == ".png":  # Pillow writes 16-bit grey PNGs only
        Image.fromarray(rgb[..., 0]).save(path)
    else:
        tifffile.imwrite(path, rgb)
    image, depth = load_image(path, None, None)
    assert depth == 12 and image.dtype == np.float32 and image.min() == 0.0 and image.max() == 1.0
    assert len(np.unique(image[..., 0])) == 4096
    tensor = to_normalised_tensor(image)
    assert len(torch.unique(tensor[0])) == 4096
    stretched, _ = load_image(path, None, (0.0, 100.0))
    assert stretched.dtype == np.float32 and len(np.unique(stretched[..., 0])) == 4096
    clipped, _ = load_image(path, None, (1.0, 99.0))  # levels between the percentiles stay distinct
    low, high = np.percentile(image, (1.0, 99.0))
    inside = (image[..., 0] > low) & (image[..., 0] < high)
    assert len(np.unique(clipped[..., 0][inside])) == len(np.unique(image[..., 0][inside])) > 3900
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_auto_bit_depth_follows_the_maximum_and_an_explicit_one_holds_for_every_image():
    dim = np.full((4, 4, 3), 1000, np.uint16)
    dim[0, 0] = 0
    auto, depth = to_model_range(dim, None)
    assert depth == 10 and auto.max() == np.float32(1000 / 1023)
    fixed, depth = to_model_range(dim, 12)
    assert depth == 12 and fixed.max() == np.float32(1000) / np.float32(4095)
    small = np.full((2, 2, 3), 200, np.uint16)  # a uint16 image within 8 bits takes the uint8 path unchanged
    as_8bit, depth = to_model_range(small, None)
    assert depth == 8 and as_8bit.dtype == np.uint8 and (as_8bit == 200).all()
    with pytest.raises(ValueError, match=r"img\.tif has grey level 1000, beyond data\.bit_depth=8"):
        to_model_range(dim, 8, source="img.tif")


@pytest.mark.parametrize("bad", [7, 17, 12.5, "12", True])
def test_a_bad_bit_depth_names_the_key(bad, sample_data):
    with pytest.raises(ValueError, match=r"data\.bit_depth=") as info:
        check_bit_depth(bad)
    assert "8 to 16" in str(info.value)
    with pytest.raises(ValueError, match=r"data\.bit_depth="):
        NucleiDataModule(name="sample", root=str(sample_data), dataset="MoNuSegSample", bit_depth=bad)


def write_12bit_dataset(root, ids=("a", "b")) -> None:
    """<root>/Deep/{train,test}/{images,labels}: 16-bit TIFF images holding 12-bit data, one disk each."""
    label = np.zeros((64, 64), np.int32)
    label[20:40, 20:40] = 1
    for split in ("train", "test"):
        for image_id in ids:
            (root / "Deep" / split / "images").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "Deep" / split / "images" / f"{image_id}.tif", twelve_bit_rgb())
            write_label(root / "Deep" / split / "labels" / f"{image_id}.png", label)


def test_the_data_module_keeps_12bit_data_and_logs_the_detected_bit_depth(tmp_path, caplog):
    from cellseg.data.weak import FullLabels

    write_12bit_dataset(tmp_path)
    dm = NucleiDataModule(name="deep", root=str(tmp_path), dataset="Deep", weak_labels=FullLabels(), crop=32,
                          crops_per_image=2, stretch_percentiles=[0, 100])
    dm.configure_targets(lambda raw, kind, shape: (raw > 0).astype(np.uint8), ignore_index=255)
    with caplog.at_level(logging.INFO, logger="cellseg.data.datamodule"):
        dm.setup("fit")
        whole = dm.whole_image_dataset("test", with_labels=True)
        dm.whole_image_dataset("test", with_labels=False)  # logged once per role
    train = dm.train_dataloader().dataset
    assert train.images[0].dtype == np.float32 and len(np.unique(train.images[0][..., 0])) == 4096
    crop = train[0]["image"]  # geometry and colour jitter on float images
    assert crop.shape == (3, 32, 32) and crop.dtype == torch.float32
    assert len(torch.unique(whole[0]["image"][0])) == 4096
    lines = [r.getMessage() for r in caplog.records if "bit depth" in r.getMessage()]
    assert len(lines) == 2, lines
    assert all("2 uint16" in line and "12-bit (2)" in line for line in lines), lines
    fixed = NucleiDataModule(name="deep", root=str(tmp_path), dataset="Deep", bit_depth=16)
    assert fixed.whole_image_dataset("test", with_labels=False)[0]["image"].max() < old_normalise(
        np.full((1, 1, 3), 255, np.uint8)).max()  # 4095 / 65535 of the range: darker than 8-bit white


def test_stages_built_for_8bit_rgb_get_floats_rounded_and_uint8_unchanged():
    from cellseg.data.intensity import as_uint8_rgb
    from cellseg.models.sam import _as_rgb_uint8

    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert as_uint8_rgb(image) is image
    np.testing.assert_array_equal(as_uint8_rgb(image / np.float32(255)), image)
    np.testing.assert_array_equal(_as_rgb_uint8(image.astype(np.float32) / 255), image)
    with pytest.raises(ValueError, match="uint16"):
        as_uint8_rgb(image.astype(np.uint16))
